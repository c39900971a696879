//! The real peers: baresip (driven over its ctrl_tcp JSON interface), linphonec (driven
//! through its console on stdin) and a SIPp UAS playing the PBX extensions the softphone is
//! transferred to. Each gets its own directory (HOME, config, logs) and its own ports.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Ports of one case: 20 from a block above the ephemeral range (61000+) and below nothing
/// else the suite uses (services take 20000–59999, `free_udp_port` the ephemeral range).
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub base: u16,
}

static NEXT_BLOCK: AtomicU16 = AtomicU16::new(0);

impl Ports {
    pub fn new() -> Ports {
        let k = NEXT_BLOCK.fetch_add(1, Ordering::SeqCst) % 10;
        // Ten blocks per test process, twenty processes before two could meet.
        let base = 61000 + (std::process::id() % 20) as u16 * 200 + k * 20;
        Ports { base }
    }
    /// The softphone's RTP (and RTCP) ports.
    pub fn rtp(&self) -> (u16, u16) {
        (self.base, self.base + 9)
    }
    pub fn phone_sip(&self) -> u16 {
        self.base + 10
    }
    pub fn ctrl(&self) -> u16 {
        self.base + 12
    }
    pub fn uas(&self) -> u16 {
        self.base + 14
    }
    /// SIPp's media port (it also takes the next few).
    pub fn uas_media(&self) -> u16 {
        self.base + 16
    }
    pub fn last(&self) -> u16 {
        self.base + 19
    }
}

/// Whether `bin` is on PATH.
pub fn installed(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}

/// Fails the test, loudly, when a peer is missing (CI installs them: .ci/run).
pub fn require(bin: &str, package: &str) {
    assert!(
        installed(bin),
        "{bin} not found: apt-get install -y {package} (.ci/run installs it); \
         the softphone tests need the real peers and do not pass without them"
    );
}

fn wait_child(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// 8 kHz mono 16-bit PCM WAV bytes.
pub fn wav(samples: &[i16]) -> Vec<u8> {
    let data = (samples.len() * 2) as u32;
    let mut w = Vec::with_capacity(44 + data as usize);
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes()); // PCM
    w.extend_from_slice(&1u16.to_le_bytes()); // mono
    w.extend_from_slice(&8000u32.to_le_bytes());
    w.extend_from_slice(&16000u32.to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&data.to_le_bytes());
    for s in samples {
        w.extend_from_slice(&s.to_le_bytes());
    }
    w
}

// ---------------------------------------------------------------------------------------
// SIPp UAS: the PBX extensions.

/// A SIPp UAS running `scenarios/uas_extension.xml` for one call.
pub struct Uas {
    child: Child,
    dir: PathBuf,
}

/// What the extension saw.
#[derive(Debug)]
pub struct UasReport {
    /// SIPp's exit status was success (a whole call: INVITE, 200, ACK, BYE).
    pub ok: bool,
    /// "extension=1001 pin_result=..." lines from the scenario's log action.
    pub log: String,
    pub stdout: String,
}

impl Uas {
    pub fn start(dir: &Path, ports: &Ports) -> Uas {
        let child = Command::new("sipp")
            .current_dir(dir)
            .arg("-sf")
            .arg(crate::common::scenario("uas_extension.xml"))
            .args(["-i", "127.0.0.1", "-mi", "127.0.0.1"])
            .args(["-p", &ports.uas().to_string()])
            .args(["-mp", &ports.uas_media().to_string()])
            .args(["-m", "1", "-nostdin", "-timeout", "90s", "-timeout_error"])
            .args(["-trace_logs", "-log_file", "uas_ext.log"])
            .args(["-trace_msg", "-message_file", "uas_messages.log"])
            .args(["-trace_err", "-error_file", "uas_errors.log"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sipp (apt-get install -y sip-tester)");
        Uas {
            child,
            dir: dir.to_path_buf(),
        }
    }

    /// Waits for the call to end (or `timeout`, then stops SIPp).
    pub fn finish(mut self, timeout: Duration) -> UasReport {
        let status = wait_child(&mut self.child, timeout);
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let mut stdout = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            let _ = o.read_to_string(&mut stdout);
        }
        let read = |n: &str| std::fs::read_to_string(self.dir.join(n)).unwrap_or_default();
        UasReport {
            ok: status.is_some_and(|s| s.success()),
            log: read("uas_ext.log"),
            stdout: format!("{}\n{}", read("uas_errors.log"), tail(&stdout, 30)),
        }
    }
}

impl Drop for Uas {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(s: &str, n: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------------------
// baresip

/// baresip with `ctrl_tcp` (commands), `menu` (acts on REFER, `dial`, `sndcode`), `aufile`
/// (the caller's audio from a WAV, no sound card) and `g711`.
pub struct Baresip {
    child: Child,
    ctrl: TcpStream,
    /// Responses and events from ctrl_tcp, in arrival order.
    pub events: Arc<Mutex<Vec<Value>>>,
    dir: PathBuf,
    token: u32,
}

impl Baresip {
    /// Starts baresip in `dir` (its config dir) with the caller's audio from `source` (8 kHz
    /// mono 16-bit WAV).
    pub fn start(dir: &Path, ports: &Ports, source: &Path) -> Baresip {
        let (rtp_min, rtp_max) = ports.rtp();
        let config = format!(
            "poll_method\t\tepoll\n\
             sip_listen\t\t127.0.0.1:{sip}\n\
             net_interface\t\t127.0.0.1\n\
             call_local_timeout\t120\n\
             call_max_calls\t\t4\n\
             audio_source\t\taufile,{src}\n\
             ausrc_srate\t\t8000\n\
             auplay_srate\t\t8000\n\
             ausrc_channels\t\t1\n\
             auplay_channels\t\t1\n\
             rtp_ports\t\t{rtp_min}-{rtp_max}\n\
             module_path\t\t/usr/lib/baresip/modules\n\
             module\t\t\tg711.so\n\
             module\t\t\taufile.so\n\
             module_tmp\t\taccount.so\n\
             module_app\t\tmenu.so\n\
             module_app\t\tctrl_tcp.so\n\
             ctrl_tcp_listen\t\t127.0.0.1:{ctrl}\n",
            sip = ports.phone_sip(),
            src = source.display(),
            ctrl = ports.ctrl(),
        );
        std::fs::write(dir.join("config"), config).unwrap();
        // regint=0: no registration (there is no registrar; we call the service directly).
        std::fs::write(
            dir.join("accounts"),
            "<sip:+15551234567@127.0.0.1>;regint=0\n",
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("baresip.log")).unwrap();
        let mut child = Command::new("baresip")
            .arg("-f")
            .arg(dir)
            .env("HOME", dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start baresip (apt-get install -y baresip)");
        // ctrl_tcp listens once baresip is ready.
        let addr: SocketAddr = format!("127.0.0.1:{}", ports.ctrl()).parse().unwrap();
        let start = Instant::now();
        let ctrl = loop {
            if let Ok(s) = TcpStream::connect(addr) {
                break s;
            }
            if let Some(s) = child.try_wait().unwrap() {
                panic!(
                    "baresip exited ({s}):\n{}",
                    std::fs::read_to_string(dir.join("baresip.log")).unwrap_or_default()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "baresip's ctrl_tcp never listened on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let mut reader = ctrl.try_clone().unwrap();
        std::thread::spawn(move || {
            // Netstrings: "<len>:<json>,".
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(n) = reader.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                while let Some(colon) = buf.iter().position(|b| *b == b':') {
                    let Some(len) = std::str::from_utf8(&buf[..colon])
                        .ok()
                        .and_then(|s| s.parse::<usize>().ok())
                    else {
                        buf.clear();
                        break;
                    };
                    if buf.len() < colon + 1 + len + 1 {
                        break;
                    }
                    let json = &buf[colon + 1..colon + 1 + len];
                    if let Ok(v) = serde_json::from_slice::<Value>(json) {
                        sink.lock().unwrap().push(v);
                    }
                    buf.drain(..colon + 1 + len + 1);
                }
            }
        });
        Baresip {
            child,
            ctrl,
            events,
            dir: dir.to_path_buf(),
            token: 0,
        }
    }

    /// Sends a ctrl_tcp command and waits for its response; panics when it fails.
    pub fn command(&mut self, command: &str, params: &str) {
        self.token += 1;
        let token = format!("t{}", self.token);
        let json =
            serde_json::json!({"command": command, "params": params, "token": token}).to_string();
        let msg = format!("{}:{},", json.len(), json);
        self.ctrl.write_all(msg.as_bytes()).unwrap();
        let start = Instant::now();
        loop {
            let found = self
                .events
                .lock()
                .unwrap()
                .iter()
                .find(|v| v["response"] == true && v["token"] == token.as_str())
                .cloned();
            if let Some(r) = found {
                assert!(
                    r["ok"] == true,
                    "baresip {command} {params}: {r}\n{}",
                    self.log()
                );
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "baresip did not answer {command}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn dial(&mut self, uri: &str) {
        self.command("dial", uri);
    }

    /// Presses `keys`, one RFC 4733 event each (menu's `sndcode`), a quarter second apart
    /// like a person typing.
    pub fn keys(&mut self, keys: &str) {
        for (i, k) in keys.chars().enumerate() {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(250));
            }
            self.command("sndcode", &k.to_string());
        }
    }

    /// Waits for a ctrl_tcp event of `kind` (e.g. CALL_ESTABLISHED) for which `pred` holds.
    pub fn wait_event(&self, kind: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) {
        let start = Instant::now();
        loop {
            if self
                .events
                .lock()
                .unwrap()
                .iter()
                .any(|v| v["type"] == kind && pred(v))
            {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "baresip: no {kind} event within {timeout:?}; events: {:?}\n{}",
                self.events.lock().unwrap(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines of baresip's output (its status line spam removed).
    pub fn log(&self) -> String {
        let raw = std::fs::read_to_string(self.dir.join("baresip.log")).unwrap_or_default();
        // Its call status line repeats "[0:00:01] audio=..." with carriage returns.
        let clean: Vec<&str> = raw
            .split(['\r', '\n'])
            .map(str::trim)
            .filter(|l| !(l.is_empty() || l.starts_with('[') && l.contains("audio=")))
            .collect();
        tail(&clean.join("\n"), 60)
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// linphonec

/// linphonec with its own HOME: `soundcard use files`, RTP bound to loopback, and DTMF as
/// SIP INFO and/or RFC 2833/4733 events.
pub struct Linphone {
    child: Child,
    stdin: ChildStdin,
    out: Arc<Mutex<Vec<String>>>,
    home: PathBuf,
}

impl Linphone {
    pub fn start(home: &Path, ports: &Ports, use_info: bool, use_rfc2833: bool) -> Linphone {
        let (rtp_min, rtp_max) = ports.rtp();
        // linphonec opens its SIP socket only once this directory exists.
        std::fs::create_dir_all(home.join(".local/share/linphone")).unwrap();
        let rc = home.join(".linphonerc");
        std::fs::write(
            &rc,
            format!(
                "[sip]\n\
                 sip_port={sip}\n\
                 sip_tcp_port=-1\n\
                 sip_tls_port=-1\n\
                 use_info={info}\n\
                 use_rfc2833={rfc}\n\
                 guess_hostname=0\n\
                 contact=\"Caller\" <sip:+15551234567@127.0.0.1>\n\
                 ipv6_enabled=0\n\
                 register_only_when_network_is_up=0\n\
                 auto_net_state_mon=0\n\
                 [rtp]\n\
                 audio_rtp_port={rtp_min}-{rtp_max}\n\
                 bind_address=127.0.0.1\n\
                 [sound]\n\
                 echocancellation=0\n\
                 [video]\n\
                 enabled=0\n\
                 capture=0\n\
                 display=0\n",
                sip = ports.phone_sip(),
                info = u8::from(use_info),
                rfc = u8::from(use_rfc2833),
            ),
        )
        .unwrap();
        let silence = home.join("silence.wav");
        std::fs::write(&silence, wav(&vec![0i16; 8000 * 60])).unwrap();
        let mut child = Command::new("linphonec")
            .arg("-c")
            .arg(&rc)
            .args(["-d", "5", "-l"])
            .arg(home.join("linphonec.log"))
            .env("HOME", home)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start linphonec (apt-get install -y linphone-cli)");
        let stdin = child.stdin.take().unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        let mut l = Linphone {
            child,
            stdin,
            out,
            home: home.to_path_buf(),
        };
        l.send("soundcard use files");
        l.wait_out(Duration::from_secs(10), "Using wav files");
        l.send(&format!("play {}", silence.display()));
        l
    }

    /// Types one console line.
    pub fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Waits until the console printed a line containing `what`.
    pub fn wait_out(&self, timeout: Duration, what: &str) {
        let start = Instant::now();
        while !self.out.lock().unwrap().iter().any(|l| l.contains(what)) {
            assert!(
                start.elapsed() < timeout,
                "linphonec never said {what:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        tail(&self.out.lock().unwrap().join("\n"), 60)
    }

    /// Where linphonec's own debug log goes (kept for failures).
    pub fn debug_log(&self) -> PathBuf {
        self.home.join("linphonec.log")
    }

    /// `quit`, then gone.
    pub fn quit(mut self) {
        self.send("quit");
        if wait_child(&mut self.child, Duration::from_secs(5)).is_none() {
            let _ = self.child.kill();
        }
    }
}

impl Drop for Linphone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
