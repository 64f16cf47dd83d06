//! Runs the real `kizuna` binary: as users and scripts do.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn kizuna() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kizuna"));
    command.env("KIZUNA_LOG", "warn").env_remove("KIZUNA_DATA_DIR").env_remove("KIZUNA_CONFIG");
    command
}

/// Runs the binary; returns stdout, panicking with stderr on failure.
pub fn run(args: &[&str]) -> String {
    let output = kizuna().args(args).output().expect("run kizuna");
    assert!(output.status.success(), "kizuna {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("utf-8 stdout")
}

pub fn last_line(text: &str) -> String {
    text.lines().last().expect("some output").trim().to_owned()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Server {
    pub async fn start(dir: &Path) -> Server {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let child = kizuna()
            .args(["serve", "--listen", &listen, "--data-dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start server");
        let base = format!("http://{listen}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !client.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
            assert!(Instant::now() < deadline, "server did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Server { child, base }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
