//! Black-box harness: the real binary on loopback, driven by real SIPp and raw sockets.
#![allow(dead_code)]
// Black-box tests are a driver: they may read the clock.
#![allow(clippy::disallowed_methods)]

pub mod http_crm;
pub mod raw_pbx;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Each service in this process gets its own RTP port range.
static NEXT_RANGE: AtomicU16 = AtomicU16::new(0);

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn scenario(name: &str) -> String {
    repo()
        .join("scenarios")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// A free UDP port on loopback (bound and released; good enough on a test machine).
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The running service with its captured JSON log.
pub struct Service {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    /// The service's config directory (audit files land here).
    pub dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Service {
    /// Starts the binary with a config that listens on loopback (ephemeral ports) plus
    /// `extra` TOML lines for the [sip] and [media] tables.
    pub fn start(sip_extra: &str, media_extra: &str) -> Service {
        Self::start_on("127.0.0.1", sip_extra, media_extra)
    }

    /// As `start`, with a `--log-level` filter (e.g. to see debug lines of one module).
    pub fn start_logging(log_level: &str, sip_extra: &str, media_extra: &str) -> Service {
        Self::launch("127.0.0.1", log_level, sip_extra, media_extra)
    }

    /// As `start`, listening (SIP and RTP) on `ip` (e.g. `::1`).
    pub fn start_on(ip: &str, sip_extra: &str, media_extra: &str) -> Service {
        Self::launch(ip, "info", sip_extra, media_extra)
    }

    fn launch(ip: &str, log_level: &str, sip_extra: &str, media_extra: &str) -> Service {
        Self::launch_full(ip, log_level, sip_extra, media_extra, "", "")
    }

    /// Everything configurable: `org_extra` adds lines to the test organization (which
    /// serves the Request-URI user `pincoderouting`), `tail` appends whole tables.
    pub fn launch_full(
        ip: &str,
        log_level: &str,
        sip_extra: &str,
        media_extra: &str,
        org_extra: &str,
        tail: &str,
    ) -> Service {
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_string()
        };
        let k = NEXT_RANGE.fetch_add(1, Ordering::SeqCst);
        // Ranges of 400 ports, by test process and service, to keep tests apart.
        let base = 20000 + (std::process::id() as u16 % 10) * 4000 + (k % 10) * 400;
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("pincoderouting.toml");
        // The shipped contacts file, unless the test brings its own CRM.
        let crm = if tail.contains("[crm]") {
            String::new()
        } else {
            format!(
                "[crm]\ncontacts = \"{}\"\n",
                repo().join("sip-config/contacts.toml").display()
            )
        };
        // Each service's admin endpoint on a port of its own (logged as "admin endpoint").
        let admin = if tail.contains("[admin]") {
            ""
        } else {
            "[admin]\nlisten = \"127.0.0.1:0\"\n"
        };
        // 400 ports hold 200 even ports: the 100-call test fits, with room.
        let max_calls = if sip_extra.contains("max_calls") {
            ""
        } else {
            "max_calls = 200"
        };
        std::fs::write(
            &cfg,
            format!(
                "default_organization = \"default\"\n\
[sip]\nlisten = [\"udp:{host}:0\", \"tcp:{host}:0\"]\n{max_calls}\n{sip_extra}\n\
[media]\nrtp_bind = \"{ip}\"\nrtp_port_min = {base}\nrtp_port_max = {}\n{media_extra}\n\
[prompts]\ndir = \"{}\"\n\
{crm}{admin}\
[[organization]]\nname = \"default\"\nenabled = true\nmatch_user = [\"pincoderouting\"]\n\
pbx_host = \"127.0.0.1\"\npin_success_ext = \"1001\"\npin_failed_ext = \"1002\"\n{org_extra}\n\
{tail}\n",
                base + 398,
                repo().join("sip-config/prompts").display(),
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_pincoderouting"))
            .args([
                "--log-format",
                "json",
                "--log-level",
                log_level,
                "serve",
                "--config",
            ])
            .arg(&cfg)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start pincoderouting");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        let mut s = Service {
            child,
            lines,
            udp: "0.0.0.0:0".parse().unwrap(),
            tcp: "0.0.0.0:0".parse().unwrap(),
            dir: dir.path().to_path_buf(),
            _dir: dir,
        };
        let listening = s.wait_for(Duration::from_secs(20), |v| {
            v.iter().filter(|e| msg(e) == "listening").count() >= 2
        });
        for e in listening.iter().filter(|e| msg(e) == "listening") {
            let addr: SocketAddr = field(e, "addr").parse().unwrap();
            match field(e, "transport").as_str() {
                "UDP" => s.udp = addr,
                _ => s.tcp = addr,
            }
        }
        s
    }

    /// Every log line so far, parsed.
    pub fn log(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn raw_log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Polls the log until `pred` holds; panics with the log after `timeout`.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let log = self.log();
            if pred(&log) {
                return log;
            }
            assert!(
                start.elapsed() < timeout,
                "timed out waiting; log so far:\n{}",
                self.raw_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The "call ended" records so far.
    pub fn ended(&self) -> Vec<Value> {
        self.log()
            .into_iter()
            .filter(|e| msg(e) == "call ended")
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The call records of the audit file (`[audit] file = "audit.log"`) so far.
    pub fn audit_calls(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join("audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["kind"] == "call")
            .collect()
    }

    /// Waits up to `timeout` for the audit file to hold `n` call records (the "call ended"
    /// log line comes a moment before its record is written); the records so far.
    pub fn wait_audit_calls(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let records = self.audit_calls();
            if records.len() >= n || start.elapsed() >= timeout {
                return records;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The admin endpoint's address (from its "admin endpoint" log line).
    pub fn admin(&self) -> SocketAddr {
        let log = self.wait_for(Duration::from_secs(10), |l| {
            l.iter().any(|e| msg(e) == "admin endpoint")
        });
        let e = log.iter().find(|e| msg(e) == "admin endpoint").unwrap();
        field(e, "addr").parse().unwrap()
    }

    /// Sends a signal (e.g. "TERM", "HUP") to the service.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    /// Waits up to `timeout` for the process to exit; its status, or None if still up.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn msg(e: &Value) -> String {
    e["fields"]["message"].as_str().unwrap_or("").to_string()
}

pub fn field(e: &Value, k: &str) -> String {
    match &e["fields"][k] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        v => v.to_string(),
    }
}

/// The Call-ID of the call span a log line was written in.
pub fn call_id(e: &Value) -> String {
    e["span"]["call_id"].as_str().unwrap_or("").to_string()
}

pub fn num(e: &Value, k: &str) -> u64 {
    e["fields"][k].as_u64().unwrap_or(0)
}

/// Runs SIPp against `target`; returns its output. Logs go to a temp directory.
pub fn sipp(scenario_name: &str, target: SocketAddr, args: &[&str]) -> Output {
    sipp_with_files(scenario_name, target, args, &[])
}

/// As `sipp`, first copying `files` (source path, name) into SIPp's working directory
/// (where `play_pcap_audio` looks).
pub fn sipp_with_files(
    scenario_name: &str,
    target: SocketAddr,
    args: &[&str],
    files: &[(PathBuf, &str)],
) -> Output {
    let dir = tempfile::tempdir().unwrap();
    for (src, name) in files {
        std::fs::copy(src, dir.path().join(name)).expect("copy file for sipp");
    }
    let out = Command::new("sipp")
        .current_dir(dir.path())
        .arg("-sf")
        .arg(scenario(scenario_name))
        .arg(target.to_string())
        .args(["-i", &target.ip().to_string()])
        .args(["-nostdin", "-timeout", "60s", "-timeout_error"])
        .args(["-trace_err"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run sipp (apt-get install sip-tester)");
    if !out.status.success() {
        let errs: String = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with("_errors.log"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect();
        eprintln!(
            "sipp {scenario_name} failed ({}):\n{}\n{}\n{errs}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    out
}

pub fn sipp_available() -> bool {
    Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

pub fn exists(p: &str) -> bool {
    Path::new(p).exists()
}

/// One HTTP/1.1 request on a fresh connection; (status, body).
pub fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        c,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    // Chunked bodies: good enough to search in.
    (status, body.to_string())
}

/// The value of one Prometheus sample (`name{labels}`), 0 when absent.
pub fn metric(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}
