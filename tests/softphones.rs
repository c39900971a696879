//! Black-box: real softphones call the real binary on loopback ("keep real peers in the
//! suite"). baresip (ctrl_tcp + menu + aufile) and linphonec (console on stdin, `soundcard
//! use files`) dial `sip:pincoderouting@127.0.0.1:PORT`, type the PIN (RFC 4733 events,
//! SIP INFO, both, or in-band tones in the audio), get our REFER and really transfer: their
//! INVITE lands on a SIPp UAS playing the PBX extensions (`scenarios/uas_extension.xml`,
//! reached through `refer_to = "sip:{ext}@127.0.0.1:PORT"`). tcpdump records the loopback
//! traffic of each case, so timings come from kernel timestamps, not from anyone's log.
//!
//! Every case checks:
//! - the softphone's transfer reached the right extension (its INVITE's Request-URI user, as
//!   the UAS saw it) and the UAS completed the call;
//! - our BYE left within 100 ms of the softphone's final NOTIFY (sipfrag >= 200);
//! - one digit per key (the audit record's `digits`, the `digit received` log lines);
//! - the announcements (verified, transferring, ...) were never cut by a key;
//! - the audit record: outcome, each attempt's result, digit source, contact, transfer
//!   target and outcome, and no PIN in it;
//! - where the case is about it: the no-input timer runs from the end of the re-prompt.
//!
//! `.ci/run` installs sip-tester, baresip, linphone-cli and tcpdump; a missing one fails the
//! test with a message saying so. tcpdump needs root or CAP_NET_RAW (CI runs as root).

// Black-box tests drive real processes: they may read the clock.
#![allow(clippy::disallowed_methods)]

#[path = "softphones/capture.rs"]
mod capture;
mod common;
#[path = "softphones/phones.rs"]
mod phones;

use capture::{Capture, Datagram, Rtp, Sip};
use common::*;
use phones::{require, Baresip, Linphone, Ports, Uas};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// The shipped file CRM: this caller has the PIN 1234 (contact demo-1).
const CALLER: &str = "+15551234567";
const LOG_LEVEL: &str = "info,pincoderouting::driver::call_task=debug";

#[derive(Debug, Clone, Copy)]
enum Phone {
    /// baresip sending RFC 4733 events (`sndcode`).
    Baresip,
    /// baresip whose microphone (aufile) plays the PIN as DTMF tones one second in.
    BaresipInband(&'static str),
    /// linphonec with `[sip] use_info` / `use_rfc2833`.
    Linphone { info: bool, rfc2833: bool },
}

#[derive(Debug, Clone, Copy)]
enum Step {
    /// Wait until the service has started the `n`th (1-based) playing of this prompt.
    Prompt(&'static str, usize),
    /// Press these keys on the softphone.
    Keys(&'static str),
}

struct Case {
    phone: Phone,
    /// Lines for the test organization (after refer_to and the timers).
    org_extra: &'static str,
    first_digit_timeout_secs: u64,
    inter_digit_timeout_secs: u64,
    steps: &'static [Step],
    ext: &'static str,
    /// Each attempt's result, in order (audit `attempt_results`); the last is the outcome.
    results: &'static [&'static str],
    /// Accepted values of the audit's digit_source.
    sources: &'static [&'static str],
    contact: Option<&'static str>,
    /// Prompts that must have been played (at least begun) during the call.
    prompts_heard: &'static [&'static str],
    /// Check the no-input timer: the `n`th `enter_pin` ends the re-prompt, the caller then
    /// types nothing, and the flow acts first_digit_timeout later.
    no_input_after_enter_pin: Option<usize>,
}

impl Case {
    /// The keys that must reach the service: all typed, but those after the last `#` may
    /// come after the call was transferred away.
    fn keys_needed(&self) -> u64 {
        let typed: String = self
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Keys(k) => Some(*k),
                Step::Prompt(..) => None,
            })
            .collect();
        let typed = match self.phone {
            Phone::BaresipInband(k) => k,
            _ => &typed,
        };
        typed.rfind('#').map_or(typed.len(), |i| i + 1) as u64
    }
}

/// Key presses that reached us before our BYE, as the softphone sent them: RFC 4733 events
/// (distinct RTP timestamps of the telephone-event payload type it offered) and SIP INFO
/// requests (distinct CSeq).
fn keys_on_wire(sip: &[Sip], packets: &[Datagram], ours: u16, ports: &Ports) -> (u64, u64) {
    let until = sip
        .iter()
        .find(|s| s.method() == Some("BYE") && s.src.port() == ours)
        .map_or(f64::MAX, |s| s.t);
    let te_pt: Option<u8> = sip
        .iter()
        .find(|s| s.method() == Some("INVITE") && s.dst.port() == ours)
        .and_then(|s| {
            s.body.lines().find_map(|l| {
                let (pt, codec) = l.strip_prefix("a=rtpmap:")?.split_once(' ')?;
                codec
                    .to_ascii_lowercase()
                    .starts_with("telephone-event/8000")
                    .then(|| pt.parse().ok())?
            })
        });
    let (rtp_min, rtp_max) = ports.rtp();
    let mut events = std::collections::BTreeSet::new();
    for p in packets.iter().filter_map(Rtp::parse) {
        if (rtp_min..=rtp_max).contains(&p.src.port())
            && !(ports.base..=ports.last()).contains(&p.dst.port())
            && Some(p.pt) == te_pt
            && p.t < until
        {
            events.insert((p.ssrc, p.timestamp));
        }
    }
    let infos: std::collections::BTreeSet<&str> = sip
        .iter()
        .filter(|s| s.method() == Some("INFO") && s.dst.port() == ours && s.t < until)
        .filter_map(|s| s.header("cseq"))
        .collect();
    (events.len() as u64, infos.len() as u64)
}

/// Prompts that say something about the verdict or the transfer: no key may cut them.
const ANNOUNCEMENTS: [&str; 5] = [
    "verified",
    "transferring",
    "locked_out",
    "transfer_failed",
    "crm_error",
];

fn prompt_events(log: &[Value], id: &str) -> Vec<(f64, String)> {
    log.iter()
        .filter(|e| msg(e) == "prompt" && call_id(e) == id)
        .map(|e| (log_time(e), field(e, "event")))
        .collect()
}

/// A log line's timestamp as seconds since the epoch (same clock as the capture's).
fn log_time(e: &Value) -> f64 {
    let ts = e["timestamp"].as_str().unwrap_or("");
    // 2026-12-02T01:14:09.689979Z
    let parse = || -> Option<f64> {
        let (date, time) = ts.trim_end_matches('Z').split_once('T')?;
        let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
        let (y, m, day) = (d.next()??, d.next()??, d.next()??);
        let mut t = time.split(':');
        let (h, min) = (
            t.next()?.parse::<i64>().ok()?,
            t.next()?.parse::<i64>().ok()?,
        );
        let s: f64 = t.next()?.parse().ok()?;
        // Days from civil (Howard Hinnant).
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146097 + doe - 719468;
        Some((days * 86400 + h * 3600 + min * 60) as f64 + s)
    };
    parse().unwrap_or(0.0)
}

fn started(log: &[Value], prompt: &str) -> usize {
    let want = format!("Started(\"{prompt}\")");
    log.iter()
        .filter(|e| msg(e) == "prompt" && field(e, "event") == want)
        .count()
}

/// The DTMF frequencies of a key.
fn dtmf_freqs(k: char) -> (f32, f32) {
    let low = [697.0, 770.0, 852.0, 941.0];
    let high = [1209.0, 1336.0, 1477.0, 1633.0];
    let (r, c) = match k {
        '1' => (0, 0),
        '2' => (0, 1),
        '3' => (0, 2),
        'A' => (0, 3),
        '4' => (1, 0),
        '5' => (1, 1),
        '6' => (1, 2),
        'B' => (1, 3),
        '7' => (2, 0),
        '8' => (2, 1),
        '9' => (2, 2),
        'C' => (2, 3),
        '*' => (3, 0),
        '0' => (3, 1),
        '#' => (3, 2),
        _ => (3, 3),
    };
    (low[r], high[c])
}

/// A caller's microphone: one second of silence, then `keys` as DTMF tones (120 ms on,
/// 120 ms off), then silence (a minute: longer than any call here).
fn inband_source(path: &Path, keys: &str) {
    use pincoderouting::media::dtmf::dual_tone;
    let mut s = vec![0i16; 8000];
    for k in keys.chars() {
        let (lo, hi) = dtmf_freqs(k);
        s.extend(dual_tone(lo, hi, 120, 6000.0));
        s.extend(std::iter::repeat_n(0, 960));
    }
    s.resize(8000 * 60, 0);
    std::fs::write(path, phones::wav(&s)).unwrap();
}

enum Driver {
    Baresip(Baresip),
    Linphone(Linphone),
}

impl Driver {
    fn keys(&mut self, keys: &str) {
        match self {
            Driver::Baresip(b) => b.keys(keys),
            // linphonec sends each key of a typed line, about a second apart.
            Driver::Linphone(l) => l.send(keys),
        }
    }
    /// Until the softphone itself has the call up (it ignores keys before that).
    fn wait_established(&self) {
        match self {
            Driver::Baresip(b) => {
                b.wait_event("CALL_ESTABLISHED", Duration::from_secs(10), |_| true)
            }
            Driver::Linphone(l) => l.wait_out(Duration::from_secs(10), "connected."),
        }
    }
    fn log(&self) -> String {
        match self {
            Driver::Baresip(b) => b.log(),
            Driver::Linphone(l) => format!("{}\n(debug log: {})", l.log(), l.debug_log().display()),
        }
    }
}

fn run(name: &str, case: Case) {
    require("sipp", "sip-tester");
    require("tcpdump", "tcpdump");
    match case.phone {
        Phone::Baresip | Phone::BaresipInband(_) => require("baresip", "baresip"),
        Phone::Linphone { .. } => require("linphonec", "linphone-cli"),
    }
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let org_extra = format!(
        "refer_to = \"sip:{{ext}}@127.0.0.1:{}\"\nfirst_digit_timeout_secs = {}\n\
         inter_digit_timeout_secs = {}\n{}\n",
        ports.uas(),
        case.first_digit_timeout_secs,
        case.inter_digit_timeout_secs,
        case.org_extra
    );
    let svc = Service::launch_full(
        "127.0.0.1",
        LOG_LEVEL,
        "",
        "",
        &org_extra,
        "[audit]\nfile = \"audit.log\"\n",
    );
    let cap = Capture::start(
        dir.path(),
        &format!(
            "udp and (port {} or portrange {}-{})",
            svc.udp.port(),
            ports.base,
            ports.last()
        ),
    );
    let uas = Uas::start(dir.path(), &ports);
    let target = format!("sip:pincoderouting@127.0.0.1:{}", svc.udp.port());
    let mut phone = match case.phone {
        Phone::Baresip | Phone::BaresipInband(_) => {
            let source = dir.path().join("mic.wav");
            match case.phone {
                Phone::BaresipInband(keys) => inband_source(&source, keys),
                _ => inband_source(&source, ""),
            }
            let home = dir.path().join("baresip");
            std::fs::create_dir_all(&home).unwrap();
            let mut b = Baresip::start(&home, &ports, &source);
            b.dial(&target);
            Driver::Baresip(b)
        }
        Phone::Linphone { info, rfc2833 } => {
            let home = dir.path().join("linphone");
            std::fs::create_dir_all(&home).unwrap();
            let mut l = Linphone::start(&home, &ports, info, rfc2833);
            l.send(&format!("call {target}"));
            Driver::Linphone(l)
        }
    };
    let context = |svc: &Service, phone: &Driver| {
        format!(
            "--- service log ---\n{}\n--- {name} softphone ---\n{}",
            svc.raw_log(),
            phone.log()
        )
    };

    // Answered, then the script: keys when the service is where a person would type them.
    let wait = |svc: &Service, phone: &Driver, what: &str, pred: &dyn Fn(&[Value]) -> bool| {
        let start = std::time::Instant::now();
        while !pred(&svc.log()) {
            assert!(
                start.elapsed() < Duration::from_secs(40),
                "{name}: timed out waiting for {what}\n{}",
                context(svc, phone)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait(&svc, &phone, "the answer", &|l| {
        l.iter().any(|e| msg(e) == "answered")
    });
    phone.wait_established();
    for step in case.steps {
        match *step {
            Step::Prompt(p, n) => {
                let what = format!("{p} #{n}");
                wait(&svc, &phone, &what, &|l| started(l, p) >= n)
            }
            Step::Keys(k) => phone.keys(k),
        }
    }
    wait(&svc, &phone, "the end of the call", &|l| {
        l.iter().any(|e| msg(e) == "call ended")
    });
    let uas = uas.finish(Duration::from_secs(20));
    let packets = cap.stop();
    let log = svc.log();
    let context = context(&svc, &phone);
    if let Driver::Linphone(l) = phone {
        l.quit();
    }

    let mut failures = Vec::new();
    check_call(&case, &svc, &ports, &uas, &packets, &log, &mut failures);
    if !failures.is_empty() {
        let sip: Vec<String> = packets
            .iter()
            .filter_map(Sip::parse)
            .map(|s| format!("{:.3} {} -> {} {}", s.t, s.src, s.dst, s.start))
            .collect();
        panic!(
            "{name}: {} check(s) failed:\n  - {}\n\
             --- SIP on the wire ---\n{}\n--- UAS ---\n{}\n{}\n{context}",
            failures.len(),
            failures.join("\n  - "),
            sip.join("\n"),
            uas.log,
            uas.stdout,
        );
    }
}

fn check_call(
    case: &Case,
    svc: &Service,
    ports: &Ports,
    uas: &phones::UasReport,
    packets: &[Datagram],
    log: &[Value],
    failures: &mut Vec<String>,
) {
    let mut fail = |m: String| failures.push(m);
    let sip: Vec<Sip> = packets.iter().filter_map(Sip::parse).collect();
    let phone_sip = ports.phone_sip();
    let ours = svc.udp.port();

    // 1. The transfer reached the extension: the softphone's INVITE to the UAS.
    let invites: Vec<&Sip> = sip
        .iter()
        .filter(|s| s.method() == Some("INVITE") && s.dst.port() == ports.uas())
        .collect();
    match invites.first() {
        None => fail(format!(
            "the softphone never called the extension (no INVITE to the UAS on {})",
            ports.uas()
        )),
        Some(i) => {
            if i.ruri_user() != Some(case.ext) {
                fail(format!(
                    "transferred to {:?}, expected extension {}: {}",
                    i.ruri_user(),
                    case.ext,
                    i.start
                ));
            }
        }
    }
    if !uas.ok {
        fail("the extension (SIPp UAS) did not complete its call".into());
    }
    if !uas.log.contains(&format!("extension={} ", case.ext)) {
        fail(format!(
            "the UAS did not log extension={}: {:?}",
            case.ext, uas.log
        ));
    }

    // 1b. Marked as voice networks expect (RFC 4594): our SIP CS3, our RTP EF, sent
    // don't-fragment with IP ID 0 (atomic datagrams, RFC 6864).
    let (rtp_min, rtp_max) = ports.rtp();
    for d in packets {
        if d.src.port() == ours && d.tos != 24 << 2 {
            fail(format!(
                "our SIP left with TOS {:#x}, not CS3 (0x60)",
                d.tos
            ));
            break;
        }
    }
    let our_rtp = packets.iter().filter(|d| {
        (rtp_min..=rtp_max).contains(&d.dst.port())
            && !(ports.base..=ports.last()).contains(&d.src.port())
    });
    if let Some(d) = our_rtp
        .clone()
        .find(|d| d.tos != 46 << 2 || !d.df || d.ip_id != 0)
    {
        fail(format!(
            "our RTP left with TOS {:#x}, DF {}, IP ID {}: expected EF (0xb8), DF, ID 0",
            d.tos, d.df, d.ip_id
        ));
    }
    if our_rtp.count() == 0 {
        fail("no RTP from us on the wire".into());
    }

    // 2. Our BYE within 100 ms of the final NOTIFY.
    let notify = sip
        .iter()
        .filter(|s| {
            s.method() == Some("NOTIFY")
                && s.src.port() == phone_sip
                && s.dst.port() == ours
                && s.sipfrag_status().is_some_and(|c| c >= 200)
        })
        .map(|s| s.t)
        .next();
    let bye = sip
        .iter()
        .filter(|s| s.method() == Some("BYE") && s.src.port() == ours)
        .map(|s| s.t)
        .next();
    match (notify, bye) {
        (Some(n), Some(b)) => {
            let ms = (b - n) * 1000.0;
            if !(0.0..=100.0).contains(&ms) {
                fail(format!(
                    "our BYE left {ms:.0} ms after the final NOTIFY (must be within 100 ms)"
                ));
            }
        }
        (n, b) => fail(format!(
            "no final NOTIFY ({n:?}) or no BYE from us ({b:?}) on the wire"
        )),
    }

    // 3. The audit record.
    let records: Vec<Value> = std::fs::read_to_string(svc.dir.join("audit.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] == "call")
        .collect();
    if records.len() != 1 {
        fail(format!(
            "expected one audit record, got {}: {records:?}",
            records.len()
        ));
    }
    let Some(r) = records.first() else { return };
    let id = r["call_id"].as_str().unwrap_or("").to_string();
    let want = |k: &str, v: Value, fail: &mut dyn FnMut(String)| {
        if r[k] != v {
            fail(format!("audit {k} = {}, expected {v}", r[k]));
        }
    };
    want("outcome", case.results.last().copied().into(), &mut fail);
    want("attempts", case.results.len().into(), &mut fail);
    want("attempt_results", case.results.into(), &mut fail);
    want("transfer_target", case.ext.into(), &mut fail);
    want("transfer_outcome", "transferred".into(), &mut fail);
    want("transferred", true.into(), &mut fail);
    want("caller_e164", CALLER.into(), &mut fail);
    want("organization", "default".into(), &mut fail);
    want(
        "contact_id",
        case.contact.map(Value::from).unwrap_or(Value::Null),
        &mut fail,
    );
    let source = r["digit_source"].as_str().unwrap_or("");
    if !case.sources.contains(&source) {
        fail(format!(
            "audit digit_source = {source:?}, expected one of {:?}",
            case.sources
        ));
    }
    // No PIN in any text of the record (the caller's number, +15551234567, happens to
    // contain 1234; numbers such as timestamps are not text).
    fn texts<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::String(s) => out.push(s),
            Value::Array(a) => a.iter().for_each(|v| texts(v, out)),
            Value::Object(o) => o.values().for_each(|v| texts(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    texts(r, &mut all);
    let leaked: Vec<&&str> = all
        .iter()
        .filter(|t| !t.contains(&CALLER[2..]) && **t != id)
        .filter(|t| t.contains("1234") || t.contains("9999"))
        .collect();
    if !leaked.is_empty() {
        fail(format!("a PIN in the audit record: {leaked:?} in {r}"));
    }

    // 4. One digit per key: as many digits as key presses reached us.
    let (events, infos) = keys_on_wire(&sip, packets, ours, ports);
    let keys = match case.phone {
        Phone::BaresipInband(k) => k.len() as u64,
        Phone::Linphone { rfc2833: false, .. } => infos,
        // A key is one event; with INFO on too, linphone says each key twice.
        _ => events,
    };
    if keys < case.keys_needed() {
        fail(format!(
            "only {keys} key presses reached us ({events} RFC 4733 events, {infos} INFO), \
             {} were typed before the last #",
            case.keys_needed()
        ));
    }
    if r["digits"] != keys {
        fail(format!(
            "audit digits = {}, but {keys} keys were pressed (one digit per key)",
            r["digits"]
        ));
    }
    let received = log
        .iter()
        .filter(|e| msg(e) == "digit received" && call_id(e) == id)
        .count() as u64;
    if received != keys {
        fail(format!(
            "{received} `digit received` lines for {keys} keys (one digit per key)"
        ));
    }

    // 5. No key cut an announcement; the prompts the case is about were played.
    let events = prompt_events(log, &id);
    let digits_at: Vec<f64> = log
        .iter()
        .filter(|e| msg(e) == "digit received" && call_id(e) == id)
        .map(log_time)
        .collect();
    for (t, ev) in &events {
        for a in ANNOUNCEMENTS {
            // Barge-in stops a prompt in the same step as the key; a prompt stopped by the
            // end of the call is not a key's doing.
            let by_key = digits_at.iter().any(|d| (t - 0.05..=*t).contains(d));
            if *ev == format!("Interrupted(\"{a}\")") && by_key {
                fail(format!("a key cut the announcement {a:?} ({ev})"));
            }
        }
    }
    for p in case.prompts_heard {
        // (Any event of it: Started, Finished or Interrupted.)
        if !events
            .iter()
            .any(|(_, e)| e.contains(&format!("(\"{p}\")")))
        {
            fail(format!("the prompt {p:?} was never played"));
        }
    }

    // 6. The no-input timer runs from the end of the re-prompt.
    if let Some(n) = case.no_input_after_enter_pin {
        check_no_input_timer(case, ours, ports, packets, &sip, &events, n, &mut fail);
    }
}

/// The re-prompt's last prompt is the `n`th enter_pin. Its start is the marker packet we sent
/// at the time the log says it started; its end is that plus the prompt's length (the player
/// keeps an absolute clock). After it the caller types nothing; the flow must act (next
/// prompt's marker, or a REFER/BYE) first_digit_timeout later — not earlier, not much later.
#[allow(clippy::too_many_arguments)]
fn check_no_input_timer(
    case: &Case,
    ours: u16,
    ports: &Ports,
    packets: &[Datagram],
    sip: &[Sip],
    events: &[(f64, String)],
    n: usize,
    fail: &mut dyn FnMut(String),
) {
    use pincoderouting::media::prompt::Prompt;
    use pincoderouting::sip::sdp::Codec;
    let (rtp_min, rtp_max) = ports.rtp();
    let ours_rtp: Vec<Rtp> = packets
        .iter()
        .filter_map(Rtp::parse)
        .filter(|p| {
            (rtp_min..=rtp_max).contains(&p.dst.port())
                && !(ports.base..=ports.last()).contains(&p.src.port())
        })
        .collect();
    let Some(&(logged, _)) = events
        .iter()
        .filter(|(_, e)| e == "Started(\"enter_pin\")")
        .nth(n - 1)
    else {
        return fail(format!(
            "the re-prompt never got to its enter_pin (#{n} in the call): the flow acted \
             before the re-prompt ended"
        ));
    };
    let Some(start) = ours_rtp
        .iter()
        .filter(|p| p.marker && (p.t - logged).abs() < 0.2)
        .map(|p| p.t)
        .next()
    else {
        return fail(format!(
            "no marker packet from us near the start of enter_pin #{n} ({logged:.3})"
        ));
    };
    let prompt = Prompt::load(
        "enter_pin",
        &repo().join("sip-config/prompts/enter_pin.wav"),
    )
    .unwrap();
    let end = start + prompt.bytes(Codec::Pcmu).len() as f64 / 8000.0;
    let next_prompt = ours_rtp
        .iter()
        .filter(|p| p.marker && p.t > end - 0.01)
        .map(|p| p.t)
        .next();
    let next_request = sip
        .iter()
        .filter(|s| s.src.port() == ours && s.t > end && s.method().is_some())
        .map(|s| s.t)
        .next();
    let acted = match (next_prompt, next_request) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => match a.or(b) {
            Some(t) => t,
            None => return fail("nothing happened after the re-prompt".into()),
        },
    };
    let waited = acted - end;
    let timeout = case.first_digit_timeout_secs as f64;
    if waited < timeout - 0.1 || waited > timeout + 0.6 {
        fail(format!(
            "the no-input timer fired {waited:.2} s after the re-prompt ended; \
             first_digit_timeout is {timeout} s (measured from the end of the re-prompt)"
        ));
    }
}

fn base_case() -> Case {
    Case {
        phone: Phone::Baresip,
        org_extra: "",
        first_digit_timeout_secs: 3,
        inter_digit_timeout_secs: 3,
        steps: &[],
        ext: "1001",
        results: &["verified"],
        sources: &["rfc4733"],
        contact: Some("demo-1"),
        prompts_heard: &[],
        no_input_after_enter_pin: None,
    }
}

#[test]
fn baresip_rfc4733_right_pin_is_transferred_to_the_success_ext() {
    run(
        "baresip rfc4733 verified",
        Case {
            steps: &[Step::Prompt("enter_pin", 1), Step::Keys("1234#")],
            ..base_case()
        },
    );
}

#[test]
fn baresip_rfc4733_wrong_pin_three_times_goes_to_the_failure_ext() {
    run(
        "baresip rfc4733 wrong x3",
        Case {
            steps: &[
                Step::Prompt("enter_pin", 1),
                Step::Keys("9999#"),
                Step::Prompt("enter_pin", 2),
                Step::Keys("9999#"),
                Step::Prompt("enter_pin", 3),
                Step::Keys("9999#"),
            ],
            ext: "1002",
            results: &["wrong_pin", "wrong_pin", "wrong_pin"],
            prompts_heard: &["incorrect_pin", "try_again"],
            ..base_case()
        },
    );
}

// linphonec over UDP queues each INFO until the previous INFO transaction has terminated
// (belle-sip: "dialog is busy"), i.e. T4 = 5 s after the first key; the other keys follow
// in a burst. An inter-digit timeout above that lets such a caller finish the PIN.
#[test]
fn linphone_sip_info_right_pin_is_transferred_to_the_success_ext() {
    run(
        "linphone info verified",
        Case {
            phone: Phone::Linphone {
                info: true,
                rfc2833: false,
            },
            inter_digit_timeout_secs: 8,
            steps: &[Step::Prompt("enter_pin", 1), Step::Keys("1234#")],
            sources: &["info"],
            ..base_case()
        },
    );
}

#[test]
fn linphone_info_and_rfc4733_both_on_count_each_key_once() {
    run(
        "linphone info+rfc4733 verified",
        Case {
            phone: Phone::Linphone {
                info: true,
                rfc2833: true,
            },
            inter_digit_timeout_secs: 8,
            steps: &[Step::Prompt("enter_pin", 1), Step::Keys("1234#")],
            sources: &["rfc4733", "info"],
            ..base_case()
        },
    );
}

#[test]
fn baresip_inband_tones_right_pin_is_transferred_to_the_success_ext() {
    run(
        "baresip inband verified",
        Case {
            phone: Phone::BaresipInband("1234#"),
            org_extra: "dtmf_mode = \"inband\"",
            sources: &["inband"],
            ..base_case()
        },
    );
}

#[test]
fn baresip_extra_keys_after_the_terminator_change_nothing() {
    run(
        "baresip extra keys after #",
        Case {
            steps: &[Step::Prompt("enter_pin", 1), Step::Keys("1234#56")],
            ..base_case()
        },
    );
}

#[test]
fn baresip_hash_alone_during_the_first_prompt_then_the_pin() {
    run(
        "baresip # alone during the first prompt",
        Case {
            steps: &[
                Step::Prompt("enter_pin", 1),
                Step::Keys("#"),
                Step::Prompt("enter_pin", 2),
                Step::Keys("1234#"),
            ],
            results: &["no_input", "verified"],
            prompts_heard: &["no_input", "try_again"],
            ..base_case()
        },
    );
}

#[test]
fn baresip_hash_alone_during_the_first_prompt_then_nothing() {
    run(
        "baresip # alone during the first prompt, then nothing",
        Case {
            org_extra: "max_attempts = 2",
            steps: &[Step::Prompt("enter_pin", 1), Step::Keys("#")],
            ext: "1002",
            results: &["no_input", "no_input"],
            contact: None,
            prompts_heard: &["no_input", "try_again"],
            no_input_after_enter_pin: Some(2),
            ..base_case()
        },
    );
}

#[test]
fn baresip_no_input_timer_runs_from_the_end_of_the_reprompt() {
    run(
        "baresip wrong once then nothing",
        Case {
            org_extra: "max_attempts = 2",
            first_digit_timeout_secs: 2,
            steps: &[Step::Prompt("enter_pin", 1), Step::Keys("9999#")],
            ext: "1002",
            results: &["wrong_pin", "no_input"],
            prompts_heard: &["incorrect_pin", "try_again"],
            no_input_after_enter_pin: Some(2),
            ..base_case()
        },
    );
}
