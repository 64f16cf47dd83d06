//! The official Segment and RudderStack SDKs (Node and Python), unchanged, pointed at a real `kizuna serve`.
//! `scripts/test` installs them (pinned in tests/sdk/package.json and requirements.txt) before the tests run.

mod common;

use common::{Server, last_line, run};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk")
}

async fn profile(server: &Server, admin: &str, kind: &str, value: &str) -> Value {
    let response = reqwest::Client::new()
        .get(format!("{}/api/profiles/by/{kind}/{value}", server.base))
        .bearer_auth(admin)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200, "profile {kind}/{value}");
    response.json().await.expect("json")
}

async fn start() -> (tempfile::TempDir, Server, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().to_str().expect("utf-8 path").to_owned();
    let key = last_line(&run(&["source", "create", "sdk", "--trusted", "--data-dir", &data]));
    let admin = last_line(&run(&["key", "create", "sdk-admin", "--data-dir", &data]));
    let server = Server::start(dir.path()).await;
    (dir, server, key, admin)
}

fn run_client(program: &Path, script: &Path, server: &Server, key: &str) {
    let output = std::process::Command::new(program)
        .arg(script)
        .current_dir(sdk_dir())
        .env("KIZUNA_BASE", &server.base)
        .env("KIZUNA_WRITE_KEY", key)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; run scripts/test, which installs the SDKs", program.display()));
    assert!(
        output.status.success(),
        "{} {} failed:\n{}\n{}",
        program.display(),
        script.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_node_sdks_work_unchanged() {
    let modules = sdk_dir().join("node_modules/@segment/analytics-node");
    assert!(modules.exists(), "{} is missing: run scripts/test, which installs the pinned SDKs", modules.display());
    let (_dir, server, key, admin) = start().await;
    run_client(Path::new("node"), &sdk_dir().join("node_sdks.js"), &server, &key);

    let segment = profile(&server, &admin, "user_id", "segment-node-user").await;
    assert_eq!(segment["traits"]["email"], "Segment.Node@Example.com");
    assert_eq!(profile(&server, &admin, "email", "segment.node@example.com").await["id"], segment["id"]);
    assert_eq!(profile(&server, &admin, "anonymous_id", "segment-node-anon").await["id"], segment["id"]);
    assert_eq!(profile(&server, &admin, "anonymous_id", "segment-node-old").await["id"], segment["id"], "alias");
    let counts = &segment["computed"]["event_counts"];
    for (name, n) in [("identify", 1), ("page", 1), ("Order Completed", 1), ("screen", 1), ("group", 1), ("alias", 1)] {
        assert_eq!(counts[name], n, "{name} in {counts}");
    }
    assert_eq!(segment["computed"]["revenue"], 42.5);
    assert!(segment["computed"]["event_counts"].as_object().is_some_and(|c| !c.is_empty()));

    let rudder = profile(&server, &admin, "user_id", "rudder-node-user").await;
    assert_eq!(rudder["computed"]["event_counts"]["Product Viewed"], 1);
    assert_eq!(rudder["computed"]["category_affinity"]["Shoes"], 1.0);
    assert_eq!(rudder["traits"]["email"], "rudder.node@example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdks_work_unchanged() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test, which creates it with the pinned SDKs",
        python.display()
    );
    let (_dir, server, key, admin) = start().await;
    run_client(&python, &sdk_dir().join("python_sdks.py"), &server, &key);

    let segment = profile(&server, &admin, "email", "segment.py@example.com").await;
    assert_eq!(segment["computed"]["orders_count"], 1);
    assert_eq!(segment["traits"]["city"], "Osaka");
    let rudder = profile(&server, &admin, "user_id", "rudder-py-user").await;
    assert_eq!(rudder["computed"]["event_counts"]["Product Added"], 1);
}
