//! `kizuna analytics fit|predict|report` as the issue's command-line contract states it: a CSV of
//! `customer_id,date,amount`, no server and no data directory; the CDNOW figures of the literature reproduced;
//! malformed files rejected with the line and the reason.

mod common;

use common::{kizuna, run};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The CDNOW sample rewritten as the contract's CSV (customer_id,date,amount), in a temporary directory.
fn cdnow_sample_csv(dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets/cdnow/CDNOW_sample.txt");
    let text = std::fs::read_to_string(&source).unwrap_or_else(|e| {
        panic!("dataset missing: {} ({e}); the shared datasets sit beside the project root", source.display())
    });
    let path = dir.join("cdnow.csv");
    let mut out = std::fs::File::create(&path).expect("create csv");
    writeln!(out, "customer_id,date,amount").expect("write");
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        // customer id, customer index, YYYYMMDD, CDs, dollars
        let fields: Vec<&str> = line.split_whitespace().collect();
        let date = fields[2];
        writeln!(out, "{},{}-{}-{},{}", fields[0], &date[..4], &date[4..6], &date[6..], fields[4]).expect("write");
    }
    path
}

fn fails_with(args: &[&str], expected: &str) {
    let output = kizuna().args(args).output().expect("run kizuna");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{args:?} should fail");
    assert!(stderr.contains(expected), "{args:?}: expected '{expected}' in: {stderr}");
}

#[test]
fn fit_json_reproduces_the_published_cdnow_parameters() {
    let dir = tempfile::tempdir().expect("temp dir");
    let csv = cdnow_sample_csv(dir.path());
    let csv = csv.to_str().expect("utf-8");
    let out = run(&[
        "analytics",
        "fit",
        "--transactions",
        csv,
        "--calibration-end",
        "1997-09-30",
        "--unit",
        "week",
        "--json",
    ]);
    assert_eq!(out.trim().lines().count(), 1, "one JSON object: {out}");
    let fit: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(fit["customers"], 2357);
    let at = |model: &str, name: &str| fit[model][name].as_f64().unwrap_or_else(|| panic!("{model}.{name}: {fit}"));
    // Fader, Hardie & Lee (2005), three decimals.
    for (name, published) in [("r", 0.243), ("alpha", 4.414), ("a", 0.793), ("b", 2.426)] {
        assert!(
            (at("bgnbd", name) - published).abs() < 5e-4,
            "bgnbd.{name} = {}, published {published}",
            at("bgnbd", name)
        );
    }
    assert!((at("bgnbd", "loglik") + 9582.4).abs() < 0.05, "bgnbd loglik {}", at("bgnbd", "loglik"));
    for (name, published) in [("r", 0.553), ("alpha", 10.578), ("s", 0.606), ("beta", 11.669)] {
        let got = at("paretonbd", name);
        assert!((got - published).abs() < 5e-4, "paretonbd.{name} = {got}, published {published}");
    }
    // Gamma-Gamma: p and gamma trade off along a ridge; the mean spend p·gamma/(q−1) is what is identified.
    let (p, q, gamma) = (at("gammagamma", "p"), at("gammagamma", "q"), at("gammagamma", "gamma"));
    let published_mean = 6.25 * 15.44 / (3.74 - 1.0);
    assert!((p * gamma / (q - 1.0) - published_mean).abs() < 0.05, "mean spend {}", p * gamma / (q - 1.0));
    assert!(at("gammagamma", "loglik").is_finite());

    // Days as the unit: the same customers, parameters rescaled (alpha is a rate in the unit).
    let days: Value = serde_json::from_str(&run(&[
        "analytics",
        "fit",
        "--transactions",
        csv,
        "--calibration-end",
        "1997-09-30",
        "--unit",
        "day",
        "--json",
    ]))
    .expect("json");
    let alpha_days = days["bgnbd"]["alpha"].as_f64().expect("alpha");
    assert!((alpha_days / at("bgnbd", "alpha") - 7.0).abs() < 0.05, "alpha in days {alpha_days}");

    let human = run(&["analytics", "fit", "--transactions", csv, "--calibration-end", "1997-09-30"]);
    assert!(human.contains("2357 customers") && human.contains("bg/nbd"), "{human}");
}

#[test]
fn report_and_predict_match_the_holdout_and_the_worked_example() {
    let dir = tempfile::tempdir().expect("temp dir");
    let csv = cdnow_sample_csv(dir.path());
    let csv = csv.to_str().expect("utf-8");
    let svg = dir.path().join("holdout.svg");
    let window = ["--transactions", csv, "--calibration-end", "1997-09-30", "--holdout-end", "1998-06-30"];
    let report = run(&[&["analytics", "report"][..], &window[..], &["--svg", svg.to_str().expect("utf-8")]].concat());
    let total = report.lines().find(|l| l.starts_with("| all |")).expect("total row");
    assert!(total.starts_with("| all | 2357 | 1882 |"), "1,882 actual holdout repeat purchases: {total}");
    let groups: Vec<&str> = report.lines().filter_map(|l| l.strip_prefix("| ")?.split(' ').next()).collect();
    assert!(groups.contains(&"0") && groups.contains(&"7+"), "{report}");
    let chart = std::fs::read_to_string(&svg).expect("svg written");
    assert!(chart.starts_with("<svg") && chart.matches("<polyline").count() == 3, "actual + two models");

    let json: Value = serde_json::from_str(&run(&[&["analytics", "report"][..], &window[..], &["--json"]].concat()))
        .expect("json report");
    assert_eq!(json["total"]["actual"], 1882.0);
    let bg_total = json["total"]["predicted"][0].as_f64().expect("prediction");
    assert!((1500.0..2200.0).contains(&bg_total), "BG/NBD predicts {bg_total} holdout purchases");

    let predictions = run(&[&["analytics", "predict"][..], &window[..]].concat());
    let worked = predictions.lines().find(|l| l.starts_with("00004,")).expect("customer 00004");
    let p_alive: f64 = worked.split(',').nth(4).and_then(|v| v.parse().ok()).expect("p_alive");
    assert!((p_alive - 0.727).abs() < 0.002, "worked example P(alive) = {p_alive}");
    assert_eq!(predictions.lines().count(), 2358, "a header and one row per customer");
}

#[test]
fn malformed_transaction_files_are_rejected_with_line_and_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = [
        ("customer_id,date,amount\na,2024-01-01,10\nb,2024-13-01,5\n", "line 3: date '2024-13-01'"),
        ("customer_id,date,amount\na,2024-01-01,10\na,2024-02-01,-4\n", "line 3: amount -4 is negative"),
        ("customer_id,date,amount\na,2024-01-01,ten\n", "line 2: amount 'ten' is not a number"),
        ("customer_id,date,amount\na,2024-01-01,NaN\n", "line 2: amount 'NaN' is not a number"),
        ("customer_id,date,amount\na,2024-01-01,1\nb,2024-01-02\n", "line 3: missing column 'amount'"),
        ("customer_id,date\na,2024-01-01\n", "line 1: missing column 'amount'"),
        ("customer_id,date,amount\n,2024-01-01,3\n", "line 2: customer_id is empty"),
    ];
    for (i, (content, expected)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad-{i}.csv"));
        std::fs::write(&path, content).expect("write");
        fails_with(&["analytics", "fit", "--transactions", path.to_str().expect("utf-8"), "--json"], expected);
    }
    fails_with(&["analytics", "fit", "--transactions", "/nonexistent/tx.csv"], "cannot open /nonexistent/tx.csv");
    fails_with(&["analytics", "fit", "--transactions", "x.csv", "--unit", "month"], "invalid value 'month'");
}

#[test]
fn a_fit_that_cannot_converge_says_so_instead_of_printing_parameters() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Everyone bought once on the same day: no repeat purchases and no spread in T — nothing identifies the
    // purchase process.
    let path = dir.path().join("flat.csv");
    let rows: String = (0..50).map(|i| format!("c{i},2024-01-01,10\n")).collect();
    std::fs::write(&path, format!("customer_id,date,amount\n{rows}")).expect("write");
    let output = kizuna()
        .args([
            "analytics",
            "fit",
            "--transactions",
            path.to_str().expect("utf-8"),
            "--calibration-end",
            "2024-06-30",
            "--json",
        ])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "stdout: {}", String::from_utf8_lossy(&output.stdout));
    assert!(stderr.contains("did not converge"), "{stderr}");
    assert!(output.stdout.is_empty(), "no parameters printed");
}
