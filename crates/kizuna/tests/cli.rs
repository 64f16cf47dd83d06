//! The `kizuna` binary as users and scripts run it: the CLI contract, CSV import, and the crash test
//! (kill -9 right after acknowledgements, restart, every acknowledged event exactly once).

mod common;

use common::{Server, kizuna, last_line, run};
use kizuna_store::{Durability, SqliteStore, Store};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn global_options_go_before_or_after_the_subcommand_and_keys_print_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().to_str().expect("utf-8 path");
    let key = last_line(&run(&["--data-dir", data, "source", "create", "web"]));
    assert!(key.starts_with("wk_") && !key.contains(' '), "{key}");
    let trusted = last_line(&run(&["source", "create", "backend", "--trusted", "--data-dir", data]));
    assert_ne!(key, trusted);
    let admin = last_line(&run(&["key", "create", "ops", "--data-dir", data]));
    assert!(admin.starts_with("kz_"), "{admin}");
    let listing = run(&["source", "list", "--data-dir", data]);
    assert!(listing.contains("backend") && listing.contains("trusted=true"), "{listing}");
    let duplicate = kizuna().args(["source", "create", "web", "--data-dir", data]).output().expect("run");
    assert!(!duplicate.status.success(), "a second source with the same name is refused");

    let config = dir.path().join("kizuna.toml");
    std::fs::write(&config, format!("data_dir = {data:?}\nmax_event_bytes = 1000\n")).expect("write config");
    let from_config = run(&["--config", config.to_str().expect("path"), "source", "list"]);
    assert!(from_config.contains("backend"), "the data dir came from the config file: {from_config}");
    let bad = kizuna()
        .args(["--config", config.to_str().expect("path"), "--data-dir", data, "serve", "--listen", "nowhere"])
        .output()
        .expect("run");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not ADDR:PORT"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_created_while_the_server_runs_work_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().to_str().expect("utf-8 path").to_owned();
    let server = Server::start(dir.path()).await;
    let key = last_line(&run(&["source", "create", "live", "--data-dir", &data]));
    let admin = last_line(&run(&["key", "create", "live-admin", "--data-dir", &data]));
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{}/v1/identify", server.base))
        .basic_auth(&key, Some(""))
        .json(&json!({"userId": "live-1", "traits": {"email": "live@example.com"}}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let profile: Value = client
        .get(format!("{}/api/profiles/by/email/live@example.com", server.base))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(profile["traits"]["email"], "live@example.com");
    // The data directory is locked while the server writes to it.
    let csv = dir.path().join("c.csv");
    std::fs::write(&csv, "user_id,email\nx,x@example.com\n").expect("csv");
    let import = kizuna().args(["import", "customers"]).arg(&csv).args(["--data-dir", &data]).output().expect("run");
    assert!(!import.status.success());
    assert!(String::from_utf8_lossy(&import.stderr).contains("stop it first"));
}

/// Kill -9 the server right after acknowledgements; on restart every acknowledged event is there exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_kill_9_exactly_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().to_str().expect("utf-8 path").to_owned();
    let key = last_line(&run(&["source", "create", "crash", "--trusted", "--data-dir", &data]));
    let admin = last_line(&run(&["key", "create", "crash-admin", "--data-dir", &data]));
    let mut server = Server::start(dir.path()).await;
    let client = reqwest::Client::new();
    let batch_of = |i: usize| {
        let events: Vec<Value> = (0..50)
            .map(|j| {
                json!({"type": "track", "userId": format!("crash-{i}"), "event": "Product Viewed",
                "messageId": format!("b{i}-{j}"), "properties": {"product_id": format!("p{j}")}})
            })
            .collect();
        json!({"batch": events})
    };
    // Four clients send continuously; the moment the 60th acknowledgement arrives the server is killed,
    // with other requests still in flight.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (killed_tx, killed_rx) = tokio::sync::watch::channel(false);
    let mut senders = Vec::new();
    for _ in 0..4 {
        let (client, base, key, acked, next, killed) =
            (client.clone(), server.base.clone(), key.clone(), acked.clone(), next.clone(), killed_rx.clone());
        senders.push(tokio::spawn(async move {
            while !*killed.borrow() {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let response =
                    client.post(format!("{base}/v1/batch")).basic_auth(&key, Some("")).json(&batch_of(i)).send().await;
                match response {
                    Ok(r) if r.status().is_success() => acked.lock().expect("lock").push(i),
                    _ => break,
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().expect("lock").len() < 60 {
        assert!(Instant::now() < deadline, "the server acknowledged too few batches");
        tokio::task::yield_now().await;
    }
    server.child.kill().expect("kill -9");
    let _ = killed_tx.send(true);
    let _ = server.child.wait();
    for sender in senders {
        let _ = sender.await;
    }
    drop(server);
    let acked: Vec<usize> = acked.lock().expect("lock").clone();
    assert!(acked.len() >= 60);

    let server = Server::start(dir.path()).await;
    for &i in &acked {
        let profile: Value = client
            .get(format!("{}/api/profiles/by/user_id/crash-{i}", server.base))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        assert_eq!(profile["computed"]["event_count"], 50, "batch {i} after restart: {profile}");
    }
    // Exactly once: the acknowledged batches replayed are all duplicates.
    for &i in acked.iter().take(10) {
        let answer: Value = client
            .post(format!("{}/v1/batch", server.base))
            .basic_auth(&key, Some(""))
            .json(&batch_of(i))
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        assert_eq!(answer["duplicates"], 50, "{answer}");
    }
}

#[test]
fn csv_import_reports_bad_lines_keeps_good_ones_and_is_idempotent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("path");
    let customers = dir.path().join("customers.csv");
    std::fs::write(
        &customers,
        "user_id,email,phone,first_name,country,email_marketing\n\
         c1,Aiko@Example.com,090-1111-2222,Aiko,JP,yes\n\
         ,,,Nobody,JP,\n\
         c3,ben@example.com,,Ben,US,no\n",
    )
    .expect("csv");
    let output =
        kizuna().args(["import", "customers"]).arg(&customers).args(["--data-dir", data]).output().expect("run");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stderr).contains("line 3:"), "bad line reported with its number");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("2 event(s) stored"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let again = run(&["import", "customers", customers.to_str().expect("path"), "--data-dir", data]);
    assert!(again.contains("0 event(s) stored, 2 already present"), "{again}");

    let orders = dir.path().join("orders.csv");
    std::fs::write(
        &orders,
        "order_id,user_id,email,created_at,currency,product_id,sku,name,category,brand,price,quantity\n\
         1001,c1,,2025-03-01T10:00:00+09:00,JPY,p1,SKU1,Beans,Coffee,Kumo,1800,2\n\
         1001,c1,,2025-03-01T10:00:00+09:00,JPY,p2,SKU2,Mug,Home,Kumo,1200,1\n\
         1002,c1,,2025-06-01T10:00:00+09:00,JPY,p1,SKU1,Beans,Coffee,Kumo,1800,1\n",
    )
    .expect("csv");
    run(&["import", "orders", orders.to_str().expect("path"), "--data-dir", data]);
    run(&["import", "orders", orders.to_str().expect("path"), "--data-dir", data]);
    let store = SqliteStore::open(Path::new(data), Durability::Full).expect("open");
    let id = store
        .profile_by_identifier(&kizuna_identity::Identifier::new(kizuna_identity::IdKind::UserId, "c1"))
        .expect("lookup")
        .expect("c1 exists");
    let profile = store.profile(id).expect("read").expect("profile");
    let computed = profile.state.computed.summary();
    assert_eq!(computed["orders_count"], 2, "imported twice, counted once");
    assert_eq!(computed["revenue"], 6600.0);
    assert_eq!(computed["first_order_at"], "2025-03-01T01:00:00Z", "original timestamps, in UTC");
    assert_eq!(profile.state.traits["first_name"].data_kind, kizuna_profiles::DataKind::Imported);
    assert_eq!(profile.state.consent["email"]["marketing"].status, kizuna_profiles::ConsentStatus::Granted);
}

#[test]
fn strict_import_writes_nothing_when_a_line_is_bad() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let customers = dir.path().join("customers.csv");
    std::fs::write(&customers, "user_id,email,first_name\nc1,a@example.com,A\n,,Nobody\n").expect("csv");
    let output = kizuna()
        .args(["import", "customers", "--strict"])
        .arg(&customers)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .expect("run");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("line 3:"));
    let store = SqliteStore::open(&data, Durability::Full).expect("open");
    assert_eq!(store.counts().expect("counts").events, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_cleanly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().to_str().expect("utf-8 path").to_owned();
    let key = last_line(&run(&["source", "create", "s", "--data-dir", &data]));
    let mut server = Server::start(dir.path()).await;
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{}/v1/track", server.base))
        .basic_auth(&key, Some(""))
        .json(&json!({"userId": "u", "event": "E"}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the server did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    drop(server);
    let store = SqliteStore::open(dir.path(), Durability::Full).expect("open");
    assert_eq!(store.counts().expect("counts").events, 1);
}
