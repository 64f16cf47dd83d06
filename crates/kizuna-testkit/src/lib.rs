//! Real peers for tests. [`SmtpSink`] runs aiosmtpd (installed into `.venv` by `scripts/test`, pinned in this
//! crate's `requirements.txt`) on 127.0.0.1 and reads back what it received, parsed by Python's `email`
//! package — so tests check the MIME a real mail server got, not what our own code thinks it sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn here(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

/// The project's virtual environment's Python (made by `scripts/test`).
pub fn python() -> PathBuf {
    let venv = here("../../.venv/bin/python");
    assert!(venv.exists(), "run scripts/test once: it installs aiosmtpd into .venv");
    venv
}

/// An SMTP server process. Recipients starting with `bounce` are refused with 550 (a hard bounce).
pub struct SmtpSink {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl SmtpSink {
    /// Starts a sink that keeps every message (as `.eml` files).
    pub fn start() -> SmtpSink {
        Self::spawn(true)
    }

    /// Starts a sink that only counts (for benchmarks).
    pub fn counting() -> SmtpSink {
        Self::spawn(false)
    }

    /// Starts a sink that requires STARTTLS with this certificate and AUTH with this login.
    pub fn start_tls(cert: &Path, key: &Path, login: &str) -> SmtpSink {
        let options =
            ["--tls".into(), cert.display().to_string(), key.display().to_string(), "--auth".into(), login.into()];
        Self::spawn_with(true, &options)
    }

    fn spawn(keep: bool) -> SmtpSink {
        Self::spawn_with(keep, &[])
    }

    fn spawn_with(keep: bool, options: &[String]) -> SmtpSink {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = if keep { dir.path().display().to_string() } else { "-".into() };
        let mut child = Command::new(python())
            .arg(here("smtp_sink.py"))
            .arg(target)
            .args(options)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start aiosmtpd");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("READY line");
        let port = line.trim().strip_prefix("READY ").and_then(|p| p.parse().ok()).expect("port");
        SmtpSink { child, port, dir }
    }

    /// Every message received so far, oldest first, as `{headers, content_type, text, html}`.
    pub fn received(&self) -> Vec<Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .expect("dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| {
                let out = Command::new(python()).arg(here("parse_mime.py")).arg(f).output().expect("parse");
                serde_json::from_slice(&out.stdout).expect("parsed JSON")
            })
            .collect()
    }

    /// How many messages arrived (counted from the files, so only for keeping sinks).
    pub fn count(&self) -> usize {
        std::fs::read_dir(self.dir.path())
            .map(|d| d.filter_map(Result::ok).filter(|e| e.path().extension().is_some_and(|x| x == "eml")).count())
            .unwrap_or(0)
    }
}

/// A self-signed certificate for `localhost` and 127.0.0.1 made with the openssl command: `(cert, key)` PEM
/// files in `dir`.
pub fn self_signed_localhost(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl (Debian package openssl)");
    assert!(status.success(), "openssl could not make a certificate");
    (cert, key)
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
