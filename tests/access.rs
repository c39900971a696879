//! Black-box: closed to strangers. The real binary on loopback turns away sources outside
//! `[sip] allow` (silently or with 403) and an organization's `allow`, rate-limits requests
//! and new calls per source (503 + Retry-After), caps calls per source, challenges INVITEs
//! with digest authentication when `[sip.auth]` is set, drops and counts RTP from other
//! than the latched address, and refuses a secret file others can read. Rejections are
//! counted by reason in the Prometheus metrics.

// Black-box tests are a driver: they may read the clock.
#![allow(clippy::disallowed_methods)]

mod common;

use common::*;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

fn request(method: &str, call_id: &str, from: &str, extra: &str, body: &str) -> String {
    format!(
        "{method} sip:pincoderouting@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP {from}:9;branch=z9hG4bK{call_id};rport\r\n\
From: <sip:+15551234567@{from}>;tag=1\r\nTo: <sip:pincoderouting@127.0.0.1>\r\n\
Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\nContact: <sip:t@{from}:9>\r\n\
{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n";

fn invite(call_id: &str, from: &str, extra: &str) -> String {
    request(
        "INVITE",
        call_id,
        from,
        &format!("Content-Type: application/sdp\r\n{extra}"),
        SDP,
    )
}

/// A UDP client bound on `ip` (any 127.x address is this machine).
fn client(ip: &str) -> UdpSocket {
    let s = UdpSocket::bind((ip, 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    s
}

/// Sends and returns the first final reply (skipping 100 Trying), if any came.
fn ask(s: &UdpSocket, to: SocketAddr, data: &str) -> Option<String> {
    s.send_to(data.as_bytes(), to).unwrap();
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, _) = s.recv_from(&mut buf).ok()?;
        let t = String::from_utf8_lossy(&buf[..n]).to_string();
        if !t.starts_with("SIP/2.0 100 ") {
            return Some(t);
        }
    }
}

fn code(reply: &Option<String>) -> u16 {
    reply
        .as_deref()
        .and_then(|r| r.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn metrics(svc: &Service) -> String {
    http(svc.admin(), "GET", "/metrics", None).1
}

fn rejections(svc: &Service, reason: &str) -> f64 {
    metric(
        &metrics(svc),
        &format!("pincoderouting_sip_rejections_total{{reason=\"{reason}\"}}"),
    )
}

#[test]
fn strangers_are_dropped_or_refused_and_counted() {
    // Only 127.0.0.1 may talk; 127.0.0.2 is a stranger on the same machine.
    let svc = Service::start("allow = [\"127.0.0.1/32\"]", "");
    let friend = client("127.0.0.1");
    let stranger = client("127.0.0.2");
    assert_eq!(
        code(&ask(
            &friend,
            svc.udp,
            &request("OPTIONS", "a-1", "127.0.0.1", "", "")
        )),
        200
    );
    for (i, m) in [
        request("OPTIONS", "a-2", "127.0.0.2", "", ""),
        invite("a-3", "127.0.0.2", ""),
        "garbage".to_string(),
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(
            ask(&stranger, svc.udp, m),
            None,
            "message {i}: dropped, not answered"
        );
    }
    assert_eq!(rejections(&svc, "not_allowed"), 3.0);
    // Over TCP the stranger's connection is closed at once, before it sends a byte.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::from(([127, 0, 0, 2], 0)).into())
        .unwrap();
    sock.connect(&svc.tcp.into()).unwrap();
    let mut tcp: std::net::TcpStream = sock.into();
    tcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut b = [0u8; 16];
    let r = std::io::Read::read(&mut tcp, &mut b);
    assert!(
        matches!(r, Ok(0))
            || matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{r:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    while rejections(&svc, "not_allowed") < 4.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(rejections(&svc, "not_allowed"), 4.0);
    // With denied = "403" the stranger learns it is refused (but never for garbage).
    let svc = Service::start("allow = [\"127.0.0.1/32\"]\ndenied = \"403\"", "");
    let r = ask(
        &stranger,
        svc.udp,
        &request("OPTIONS", "a-4", "127.0.0.2", "", ""),
    );
    assert_eq!(code(&r), 403, "{r:?}");
    assert_eq!(ask(&stranger, svc.udp, "garbage"), None);
    assert_eq!(
        code(&ask(
            &friend,
            svc.udp,
            &request("OPTIONS", "a-5", "127.0.0.1", "", "")
        )),
        200
    );
}

#[test]
fn an_organization_allow_list_narrows_its_calls() {
    let svc = Service::launch_full(
        "127.0.0.1",
        "info",
        "denied = \"403\"",
        "",
        "allow = [\"127.0.0.3/32\"]",
        "",
    );
    let r = ask(
        &client("127.0.0.1"),
        svc.udp,
        &invite("o-1", "127.0.0.1", ""),
    );
    assert_eq!(code(&r), 403, "{r:?}");
    let r = ask(
        &client("127.0.0.3"),
        svc.udp,
        &invite("o-2", "127.0.0.3", ""),
    );
    assert_eq!(code(&r), 200, "{r:?}");
    assert_eq!(rejections(&svc, "org_not_allowed"), 1.0);
}

#[test]
fn request_and_call_rates_and_calls_per_source_are_limited() {
    let svc = Service::start(
        "requests_per_sec = 2\nrequests_burst = 4\nretry_after_secs = 3",
        "",
    );
    let c = client("127.0.0.1");
    let codes: Vec<u16> = (0..6)
        .map(|i| {
            code(&ask(
                &c,
                svc.udp,
                &request("OPTIONS", &format!("r-{i}"), "127.0.0.1", "", ""),
            ))
        })
        .collect();
    assert_eq!(&codes[..4], &[200, 200, 200, 200], "{codes:?}");
    assert!(codes[4..].contains(&503), "{codes:?}");
    let r = ask(&c, svc.udp, &request("OPTIONS", "r-x", "127.0.0.1", "", "")).unwrap();
    assert!(
        r.starts_with("SIP/2.0 503") && r.contains("Retry-After: 3"),
        "{r}"
    );
    // Another source has its own bucket.
    assert_eq!(
        code(&ask(
            &client("127.0.0.5"),
            svc.udp,
            &request("OPTIONS", "r-y", "127.0.0.5", "", "")
        )),
        200
    );
    assert!(rejections(&svc, "request_rate") >= 2.0);
    // Calls: one up at a time per source, and at most one new call a second (burst 1).
    let svc = Service::start(
        // max_calls named: the harness sees "max_calls" in max_calls_per_source.
        "max_calls = 200\nmax_calls_per_source = 1\ncalls_per_sec = 1\ncalls_burst = 1",
        "",
    );
    let c = client("127.0.0.1");
    assert_eq!(
        code(&ask(&c, svc.udp, &invite("c-1", "127.0.0.1", ""))),
        200
    );
    let r = ask(&c, svc.udp, &invite("c-2", "127.0.0.1", ""));
    assert_eq!(code(&r), 503, "{r:?}");
    assert_eq!(rejections(&svc, "source_calls"), 1.0);
    let c2 = client("127.0.0.6");
    assert_eq!(
        code(&ask(&c2, svc.udp, &invite("c-3", "127.0.0.6", ""))),
        200
    );
    assert_eq!(
        code(&ask(&c2, svc.udp, &invite("c-4", "127.0.0.6", ""))),
        503
    );
}

/// RFC 7616 §3.4.1 as a trunk computes it.
fn digest(alg: &str, nonce: &str, nc: &str, password: &str, uri: &str) -> String {
    use sha2::Digest as _;
    let h = |s: String| -> String {
        let bytes: Vec<u8> = if alg == "MD5" {
            md5::Md5::digest(s.as_bytes()).to_vec()
        } else {
            sha2::Sha256::digest(s.as_bytes()).to_vec()
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    };
    let ha1 = h(format!("trunk:pincoderouting:{password}"));
    let ha2 = h(format!("INVITE:{uri}"));
    let resp = h(format!("{ha1}:{nonce}:{nc}:c0ffee:auth:{ha2}"));
    format!(
        "Digest username=\"trunk\", realm=\"pincoderouting\", nonce=\"{nonce}\", uri=\"{uri}\", \
response=\"{resp}\", algorithm={alg}, cnonce=\"c0ffee\", qop=auth, nc={nc}"
    )
}

fn nonce(reply: &str, alg: &str) -> String {
    let line = reply
        .lines()
        .find(|l| l.starts_with("WWW-Authenticate:") && l.contains(&format!("algorithm={alg},")))
        .unwrap_or_else(|| panic!("no {alg} challenge in {reply}"));
    let start = line.find("nonce=\"").unwrap() + 7;
    line[start..].split('"').next().unwrap().to_string()
}

#[test]
fn digest_authentication_challenges_and_refuses_replays() {
    std::env::set_var("PINCODEROUTING_TEST_SIP_PASSWORD", "tr0mb0ne");
    let svc = Service::start(
        "[sip.auth]\nusername = \"trunk\"\npassword_env = \"PINCODEROUTING_TEST_SIP_PASSWORD\"",
        "",
    );
    let c = client("127.0.0.1");
    let uri = "sip:pincoderouting@127.0.0.1";
    let r = ask(&c, svc.udp, &invite("d-1", "127.0.0.1", "")).unwrap();
    assert!(r.starts_with("SIP/2.0 401 "), "{r}");
    let sha_at = r.find("algorithm=SHA-256").unwrap();
    let md5_at = r.find("algorithm=MD5").unwrap();
    assert!(sha_at < md5_at, "SHA-256 offered first: {r}");
    let n = nonce(&r, "SHA-256");
    let wrong = format!(
        "Authorization: {}\r\n",
        digest("SHA-256", &n, "00000001", "guess", uri)
    );
    assert_eq!(
        code(&ask(&c, svc.udp, &invite("d-2", "127.0.0.1", &wrong))),
        401
    );
    let right = format!(
        "Authorization: {}\r\n",
        digest("SHA-256", &n, "00000001", "tr0mb0ne", uri)
    );
    assert_eq!(
        code(&ask(&c, svc.udp, &invite("d-3", "127.0.0.1", &right))),
        200
    );
    // The same credentials on a new call: a replay.
    assert_eq!(
        code(&ask(&c, svc.udp, &invite("d-4", "127.0.0.1", &right))),
        401
    );
    let md5 = format!(
        "Authorization: {}\r\n",
        digest("MD5", &n, "00000002", "tr0mb0ne", uri)
    );
    assert_eq!(
        code(&ask(&c, svc.udp, &invite("d-5", "127.0.0.1", &md5))),
        200
    );
    assert_eq!(rejections(&svc, "auth"), 2.0);
    // OPTIONS is not challenged (trunk monitoring).
    assert_eq!(
        code(&ask(
            &c,
            svc.udp,
            &request("OPTIONS", "d-6", "127.0.0.1", "", "")
        )),
        200
    );
}

#[test]
fn rtp_from_other_than_the_latched_address_is_dropped_and_counted() {
    let svc = Service::start("", "");
    let c = client("127.0.0.1");
    let ok = ask(&c, svc.udp, &invite("rtp-1", "127.0.0.1", "")).unwrap();
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    let port: u16 = ok
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap();
    let ours = SocketAddr::from(([127, 0, 0, 1], port));
    let pkt = |seq: u16| {
        let mut p = vec![
            0x80,
            0,
            (seq >> 8) as u8,
            seq as u8,
            0,
            0,
            0,
            160,
            0,
            0,
            0,
            9,
        ];
        p.extend_from_slice(&[0xFF; 160]);
        p
    };
    let pbx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let intruder = UdpSocket::bind("127.0.0.7:0").unwrap();
    for i in 0..5 {
        pbx.send_to(&pkt(i), ours).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    for i in 0..7 {
        intruder.send_to(&pkt(100 + i), ours).unwrap();
    }
    // Counters are flushed about once a second.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = 0.0;
    while Instant::now() < deadline {
        seen = metric(&metrics(&svc), "pincoderouting_rtp_wrong_source_total");
        if seen >= 7.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(seen, 7.0);
}

#[cfg(unix)]
#[test]
fn a_secret_file_others_can_read_is_refused_naming_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("sip-password");
    std::fs::write(&pw, "tr0mb0ne\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = dir.path().join("p.toml");
    std::fs::write(
        &cfg,
        format!(
            "[sip]\nlisten = [\"udp:127.0.0.1:0\"]\n[sip.auth]\nusername = \"trunk\"\npassword_file = \"sip-password\"\n\
[prompts]\ndir = \"{}\"\n[crm]\ncontacts = \"{}\"\n",
            repo().join("sip-config/prompts").display(),
            repo().join("sip-config/contacts.toml").display()
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_pincoderouting");
    let out = std::process::Command::new(bin)
        .arg("check-config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sip-password") && err.contains("chmod 600"),
        "{err}"
    );
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = std::process::Command::new(bin)
        .arg("check-config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// The `m=audio` port of our answer.
fn media_port(reply: &str) -> u16 {
    reply
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn an_rtp_flood_on_one_call_does_not_starve_another() {
    let svc = Service::start("", "");
    // Call B's media goes to a socket of ours: it counts the frames we send it.
    let b_rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    b_rtp
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let b_port = b_rtp.local_addr().unwrap().port();
    let sdp_b = SDP.replace("m=audio 9 ", &format!("m=audio {b_port} "));
    let c = client("127.0.0.1");
    let a = ask(&c, svc.udp, &invite("flood-a", "127.0.0.1", "")).unwrap();
    let b = ask(
        &c,
        svc.udp,
        &request(
            "INVITE",
            "flood-b",
            "127.0.0.1",
            "Content-Type: application/sdp\r\n",
            &sdp_b,
        ),
    )
    .unwrap();
    assert!(
        a.starts_with("SIP/2.0 200") && b.starts_with("SIP/2.0 200"),
        "{a}\n{b}"
    );
    let a_media = SocketAddr::from(([127, 0, 0, 1], media_port(&a)));
    // Flood call A's RTP port with garbage for 3 s, as fast as one thread can.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            let junk = [0x55u8; 200];
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if s.send_to(&junk, a_media).is_ok() {
                    sent += 1;
                }
            }
            sent
        })
    };
    let start = Instant::now();
    let mut frames = 0u32;
    let mut buf = [0u8; 2048];
    while start.elapsed() < Duration::from_secs(3) {
        if let Ok((n, _)) = b_rtp.recv_from(&mut buf) {
            if n >= 12 && buf[0] >> 6 == 2 {
                frames += 1;
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = flood.join().unwrap();
    // 20 ms frames: 150 in 3 s. Allow for a loaded test machine, not for starvation.
    assert!(sent > 10_000, "the flood really flooded ({sent} datagrams)");
    assert!(
        frames >= 90,
        "call B got {frames} of ~150 frames during the flood"
    );
}
