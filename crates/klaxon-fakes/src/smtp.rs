//! A real SMTP server for tests: aiosmtpd (`smtp/server.py`, pinned in
//! `smtp/requirements.txt`) requiring AUTH, over STARTTLS, implicit TLS or no TLS, started as a
//! child process on a free port and killed on drop. Unlike the HTTP fakes this is not ours: it
//! is a maintained SMTP implementation, so the email channel is tested against real SMTP.
//!
//! The interpreter comes from `KLAXON_TEST_SMTP_PYTHON` (`.ci/run` makes a venv). Without it
//! [`python`] prints a skip notice and returns `None` — unless `KLAXON_REQUIRE_SERVICES=1`, as in
//! CI, where a missing server fails the test.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The interpreter to run the server with, or `None` when the test is to be skipped.
///
/// # Panics
/// When `KLAXON_REQUIRE_SERVICES=1` and no interpreter is configured.
pub fn python() -> Option<String> {
    match std::env::var("KLAXON_TEST_SMTP_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            assert!(
                std::env::var("KLAXON_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "KLAXON_REQUIRE_SERVICES=1 but KLAXON_TEST_SMTP_PYTHON is not set: run .ci/run, \
                 or point it at a Python with crates/klaxon-fakes/smtp/requirements.txt installed"
            );
            eprintln!(
                "skipped: KLAXON_TEST_SMTP_PYTHON is not set (a Python with \
                 crates/klaxon-fakes/smtp/requirements.txt; .ci/run makes one)"
            );
            None
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpMode {
    /// Plain connect, `STARTTLS` offered and required before AUTH.
    StartTls,
    /// TLS from the first byte (SMTPS).
    Implicit,
    /// No TLS offered at all (to test what a client does without it).
    Plain,
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "klaxon-smtp-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("mail")).expect("temp dir is writable");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One aiosmtpd process, killed on drop. Its certificate is self-signed for `localhost` and
/// `127.0.0.1`; clients connect with `verify = false` unless they test verification.
pub struct SmtpServer {
    /// Behind a lock so `stop` can take `&self`, like the HTTP fakes'.
    child: std::sync::Mutex<Child>,
    port: u16,
    dir: Scratch,
}

impl SmtpServer {
    /// Starts the server and waits until it accepts connections. Recipients whose local part
    /// starts with `tempfail` get `451`, with `reject` get `550`.
    ///
    /// # Panics
    /// If the interpreter cannot be started or the server does not come up.
    pub fn start(python: &str, mode: SmtpMode, user: &str, password: &str) -> SmtpServer {
        let dir = Scratch::new();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("a self-signed certificate");
        let (cert_path, key_path) = (dir.0.join("cert.pem"), dir.0.join("key.pem"));
        std::fs::write(&cert_path, cert.cert.pem()).expect("cert written");
        std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("key written");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("smtp/server.py");
        let mut child = Command::new(python)
            .arg(script)
            .args([
                "--mode",
                match mode {
                    SmtpMode::StartTls => "starttls",
                    SmtpMode::Implicit => "implicit",
                    SmtpMode::Plain => "plain",
                },
            ])
            .arg("--cert")
            .arg(&cert_path)
            .arg("--key")
            .arg(&key_path)
            .args(["--user", user, "--password", password])
            .arg("--maildir")
            .arg(dir.0.join("mail"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {python}: {e}"));
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let Some(port) = line
            .strip_prefix("LISTENING ")
            .and_then(|p| p.trim().parse().ok())
        else {
            let _ = child.kill();
            panic!("the SMTP server did not start (said {line:?}); see its stderr above");
        };
        SmtpServer {
            child: std::sync::Mutex::new(child),
            port,
            dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Answers the next `n` messages' DATA with SMTP reply `code` (e.g. 451 transient, 550
    /// permanent, 421 "slow down").
    pub fn fail_next(&self, n: usize, code: u16) {
        let codes: Vec<String> = std::iter::repeat_n(code.to_string(), n).collect();
        std::fs::write(self.dir.0.join("fail_next"), codes.join("\n")).expect("control file");
    }

    /// Kills the server: the port refuses connections, like a host that is down.
    pub fn stop(&self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Every message the server accepted, oldest first.
    pub fn received(&self) -> Vec<ReceivedMail> {
        let Ok(entries) = std::fs::read_dir(self.dir.0.join("mail")) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .filter_map(|f| serde_json::from_slice(&std::fs::read(f).ok()?).ok())
            .collect()
    }

    /// Waits until at least `n` messages have arrived; returns them.
    ///
    /// # Panics
    /// After `timeout`, with what did arrive.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<ReceivedMail> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {n} messages in {timeout:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One message as the server recorded it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ReceivedMail {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    /// The session was encrypted when the message was sent.
    pub tls: bool,
    /// The AUTH login used, if any.
    pub login: Option<String>,
    /// The raw message, one char per byte (see [`ReceivedMail::bytes`]).
    pub data: String,
}

impl ReceivedMail {
    /// The raw message bytes (server.py stores them as latin-1 text: one char per byte).
    pub fn bytes(&self) -> Vec<u8> {
        self.data.chars().map(|c| c as u32 as u8).collect()
    }
}
