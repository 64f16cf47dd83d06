//! `kizuna recs eval` on the real datasets in ../shared/datasets: the personalized model ranks clearly above
//! the popularity baseline, and the JSON contract holds.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

fn dataset(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets").join(name);
    assert!(dir.is_dir(), "dataset missing: {}", dir.display());
    dir
}

fn eval(name: &str, split: &str) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_kizuna"))
        .args(["recs", "eval", "--dataset"])
        .arg(dataset(name))
        .args(["--split", split, "--json"])
        .output()
        .expect("run kizuna");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

fn result<'a>(report: &'a Value, strategy: &str) -> &'a Value {
    report["results"].as_array().expect("results").iter().find(|r| r["strategy"] == strategy).expect(strategy)
}

#[test]
fn ml_100k_personalized_beats_popularity_on_both_splits() {
    for split in ["random", "time"] {
        let report = eval("ml-100k", split);
        assert_eq!(report["dataset"], "ml-100k");
        assert_eq!(report["split"], split);
        assert_eq!(report["users"], 943);
        assert_eq!(report["items"], 1682);
        let pop = result(&report, "popularity");
        let ease = result(&report, "ease");
        for metric in ["recall@20", "ndcg@10", "ndcg@100", "coverage", "train_seconds"] {
            assert!(ease[metric].is_f64() && pop[metric].is_f64(), "{metric} missing in {report}");
        }
        let ratio = |m: &str| ease[m].as_f64().unwrap_or(0.0) / pop[m].as_f64().unwrap_or(1.0);
        assert!(ratio("ndcg@10") > 1.5, "{split}: EASE ndcg@10 not clearly above popularity: {report}");
        assert!(ratio("recall@20") > 1.5, "{split}: EASE recall@20 not clearly above popularity: {report}");
        assert!(ratio("coverage") > 2.0, "{split}: EASE should cover far more of the catalog: {report}");
    }
}

#[test]
fn instacart_is_recognised_and_evaluated() {
    let report = eval("instacart-sample", "time");
    assert_eq!(report["dataset"], "instacart-sample");
    assert!(report["interactions"].as_u64().is_some_and(|n| n > 30_000), "{report}");
    let strategies: Vec<&str> =
        report["results"].as_array().expect("results").iter().filter_map(|r| r["strategy"].as_str()).collect();
    assert_eq!(strategies, ["popularity", "ease", "ials"]);
}

#[test]
fn a_folder_without_a_dataset_is_refused_with_its_path() {
    let dir = tempfile::tempdir().expect("dir");
    let out = Command::new(env!("CARGO_BIN_EXE_kizuna"))
        .args(["recs", "eval", "--dataset"])
        .arg(dir.path())
        .output()
        .expect("run kizuna");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no recognised dataset") && stderr.contains(&dir.path().display().to_string()), "{stderr}");
}
