//! Black-box: what an operator sees and does — /metrics moving with real calls, health and
//! readiness, the list of calls, reload over HTTP, the bearer token, graceful drain on
//! SIGTERM (and at once on a second one), --version.

// Black-box tests are a driver: they may read the clock.
#![allow(clippy::disallowed_methods)]

mod common;

use common::raw_pbx::RawPbx;
use common::*;
use std::time::{Duration, Instant};

fn require_sipp() {
    assert!(
        sipp_available(),
        "SIPp is needed for these tests: apt-get install -y sip-tester"
    );
}

/// `n` SIPp PIN calls (1234# by RFC 4733 from the demo caller) to the end, in parallel.
fn pin_calls(svc: &Service, n: usize) {
    let target = svc.udp;
    let runs: Vec<_> = (0..n)
        .map(|_| {
            std::thread::spawn(move || {
                let mp = free_udp_port().to_string();
                sipp_with_files(
                    "uac_pin_transfer.xml",
                    target,
                    &["-m", "1", "-mp", &mp, "-key", "caller", "+15551234567"],
                    &[(repo().join("scenarios/pcap/rfc4733_pin.pcap"), "dtmf.pcap")],
                )
                .status
                .success()
            })
        })
        .collect();
    for r in runs {
        assert!(r.join().unwrap(), "a SIPp PIN call failed");
    }
}

#[test]
fn metrics_move_by_exactly_the_calls_made_and_never_show_a_number_or_digit() {
    require_sipp();
    let svc = Service::launch_full("127.0.0.1", "info", "", "", "", "");
    let admin = svc.admin();
    let (code, before) = http(admin, "GET", "/metrics", None);
    assert_eq!(code, 200);
    let calls = "pincoderouting_calls_total{organization=\"default\",outcome=\"verified\"}";
    let digits = "pincoderouting_digits_total{source=\"rfc4733\"}";
    let refers = "pincoderouting_refers_total{result=\"transferred\"}";
    let crm = "pincoderouting_crm_requests_total{adapter=\"file\",outcome=\"found\"}";
    let invites = "pincoderouting_sip_messages_total{direction=\"in\",kind=\"INVITE\"}";
    pin_calls(&svc, 3);
    svc.wait_for(Duration::from_secs(10), |l| {
        l.iter().filter(|e| msg(e) == "call ended").count() >= 3
    });
    // "call ended" is logged once the call's counters have moved; the call leaves the
    // calls-in-progress gauge when its loop drops it, just after: read until it has.
    let start = Instant::now();
    let after = loop {
        let (_, after) = http(admin, "GET", "/metrics", None);
        if metric(&after, "pincoderouting_calls_in_progress") == 0.0
            || start.elapsed() > Duration::from_secs(5)
        {
            break after;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        metric(&after, calls) - metric(&before, calls),
        3.0,
        "{after}"
    );
    assert_eq!(metric(&after, digits) - metric(&before, digits), 15.0);
    assert_eq!(metric(&after, refers) - metric(&before, refers), 3.0);
    assert_eq!(metric(&after, crm) - metric(&before, crm), 3.0);
    assert!(metric(&after, invites) - metric(&before, invites) >= 3.0);
    assert!(
        metric(
            &after,
            "pincoderouting_rtp_packets_total{direction=\"out\"}"
        ) > 100.0
    );
    assert!(after.contains("pincoderouting_rtp_frame_lateness_seconds_bucket"));
    assert!(after.contains("pincoderouting_crm_request_duration_seconds_bucket{"));
    assert!(after.contains("pincoderouting_build_info{"));
    assert_eq!(metric(&after, "pincoderouting_calls_in_progress"), 0.0);
    // Never a caller number, a Call-ID or the digits, in any label or value.
    for text in [&before, &after] {
        assert!(!text.contains("5551234567"), "caller number in /metrics");
        assert!(!text.contains("@127.0.0.1"), "a Call-ID in /metrics");
        assert!(!text.contains("1234#"));
    }
    assert_eq!(http(admin, "GET", "/healthz", None).0, 200);
    assert_eq!(http(admin, "GET", "/readyz", None).0, 200);
    assert_eq!(http(admin, "GET", "/nope", None).0, 404);
    assert_eq!(http(admin, "POST", "/metrics", None).0, 405);
}

#[test]
fn calls_lists_calls_in_progress_with_a_digit_count_only() {
    let svc = Service::launch_full("127.0.0.1", "info", "", "", "", "");
    let admin = svc.admin();
    let mut pbx = RawPbx::new(svc.udp, "ops-calls-1");
    pbx.call("+15551234567");
    // The listing is the loop's snapshot, published after the step that sent the 200 (and
    // then the one that took the ACK): read until it has caught up.
    let start = Instant::now();
    let (body, v) = loop {
        let (code, body) = http(admin, "GET", "/calls", None);
        assert_eq!(code, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v[0]["state"] == "collecting" || start.elapsed() > Duration::from_secs(5) {
            break (body, v);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let calls = v.as_array().unwrap();
    assert_eq!(calls.len(), 1, "{body}");
    assert_eq!(calls[0]["call_id"], "ops-calls-1");
    assert_eq!(calls[0]["organization"], "default");
    assert_eq!(calls[0]["state"], "collecting");
    assert_eq!(calls[0]["digit_count"], 0);
    assert!(calls[0]["age_ms"].as_u64().is_some());
    assert!(!body.contains("5551234567"), "no caller number: {body}");
    let (_, m) = http(admin, "GET", "/metrics", None);
    assert_eq!(metric(&m, "pincoderouting_calls_in_progress"), 1.0);
}

#[test]
fn reload_over_http_and_the_bearer_token() {
    std::env::set_var("OPS_TEST_ADMIN_TOKEN", "s3cret-token");
    let svc = Service::launch_full(
        "127.0.0.1",
        "info",
        "",
        "",
        "",
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"OPS_TEST_ADMIN_TOKEN\"\n",
    );
    let admin = svc.admin();
    let token = Some("s3cret-token");
    assert_eq!(http(admin, "GET", "/metrics", None).0, 401);
    assert_eq!(http(admin, "GET", "/metrics", Some("wrong")).0, 401);
    assert_eq!(http(admin, "GET", "/healthz", token).0, 200);
    let cfg = svc.dir.join("pincoderouting.toml");
    let good = std::fs::read_to_string(&cfg).unwrap();
    let (code, body) = http(admin, "POST", "/reload", token);
    assert_eq!(code, 200, "{body}");
    std::fs::write(&cfg, format!("{good}\n[media]\nptime_ms = 7\n")).unwrap();
    let (code, body) = http(admin, "POST", "/reload", token);
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("ptime_ms") || body.contains("media"),
        "{body}"
    );
    std::fs::write(&cfg, good).unwrap();
    let (_, m) = http(admin, "GET", "/metrics", token);
    assert_eq!(
        metric(&m, "pincoderouting_config_reloads_total{result=\"ok\"}"),
        1.0
    );
    assert_eq!(
        metric(&m, "pincoderouting_config_reloads_total{result=\"failed\"}"),
        1.0
    );
    assert!(metric(&m, "pincoderouting_config_age_seconds") >= 0.0);
}

/// SIGTERM with a call in progress: readiness 503, a new INVITE and an OPTIONS get 503, the
/// call in progress still completes its REFER/NOTIFY/BYE, then the process exits 0.
#[test]
fn sigterm_drains_the_calls_in_progress_then_exits_zero() {
    let mut svc = Service::launch_full(
        "127.0.0.1",
        "info",
        "",
        "",
        "max_attempts = 1\nfirst_digit_timeout_secs = 1\n",
        "",
    );
    let admin = svc.admin();
    let mut pbx = RawPbx::new(svc.udp, "ops-drain-1");
    pbx.call("+15551234567");
    svc.signal("TERM");
    svc.wait_for(Duration::from_secs(5), |l| {
        l.iter().any(|e| msg(e).starts_with("draining"))
    });
    assert_eq!(http(admin, "GET", "/readyz", None).0, 503);
    let other = RawPbx::new(svc.udp, "ops-drain-2");
    other.invite("+15551234567");
    let (r, _) = other.wait(Duration::from_secs(5), |g| {
        g.status().is_some_and(|c| c >= 200)
    });
    assert_eq!(r.status(), Some(503), "{}", r.text);
    assert!(r.header("Retry-After").is_some());
    let options = format!(
        "OPTIONS sip:pincoderouting@{t} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKopt;rport\r\n\
From: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:pincoderouting@{t}>\r\nCall-ID: ops-opt\r\n\
CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        t = svc.udp
    );
    other.send(&options);
    let (r, _) = other.wait(Duration::from_secs(5), |g| g.status().is_some());
    assert_eq!(r.status(), Some(503));
    // The call in progress goes on: no input, the failure REFER, NOTIFY 200, our BYE.
    let (refer, _) = pbx.wait(Duration::from_secs(20), |g| g.method() == Some("REFER"));
    pbx.accept_refer(&refer, 200);
    let (bye, _) = pbx.wait(Duration::from_secs(5), |g| g.method() == Some("BYE"));
    pbx.send(&bye.reply(200, "OK"));
    let status = svc.wait_exit(Duration::from_secs(10)).expect("exited");
    assert!(status.success(), "{status:?}");
    let log = svc.log();
    let audit = log
        .iter()
        .filter(|e| msg(e) == "audit" && field(e, "record").contains("ops-drain-1"))
        .count();
    assert_eq!(audit, 1, "one audit record for the drained call");
}

/// A second SIGTERM ends at once: BYE to every call, records written, exit 0.
#[test]
fn a_second_sigterm_ends_at_once_with_bye() {
    let mut svc = Service::launch_full("127.0.0.1", "info", "", "", "", "");
    let mut pbx = RawPbx::new(svc.udp, "ops-hard-1");
    pbx.call("+15551234567");
    svc.signal("TERM");
    svc.wait_for(Duration::from_secs(5), |l| {
        l.iter().any(|e| msg(e).starts_with("draining"))
    });
    let t = Instant::now();
    svc.signal("TERM");
    let (bye, _) = pbx.wait(Duration::from_secs(5), |g| g.method() == Some("BYE"));
    pbx.send(&bye.reply(200, "OK"));
    assert!(t.elapsed() < Duration::from_secs(2), "BYE at once");
    let status = svc.wait_exit(Duration::from_secs(5)).expect("exited");
    assert!(status.success(), "{status:?}");
    let log = svc.log();
    assert!(log
        .iter()
        .any(|e| msg(e) == "audit" && field(e, "record").contains("ops-hard-1")));
}

#[test]
fn version_names_the_git_revision() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pincoderouting"))
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.starts_with(&format!(
            "pincoderouting {} (git ",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    let rev = text
        .split("(git ")
        .nth(1)
        .unwrap()
        .trim_end()
        .trim_end_matches(')');
    assert!(!rev.is_empty() && rev != "unknown", "{text}");
}

/// The shipped Grafana dashboard reads only metrics the service exports (so it cannot rot).
#[test]
fn grafana_dashboard_reads_only_metrics_we_export() {
    let svc = Service::launch_full("127.0.0.1", "info", "", "", "", "");
    let (_, text) = http(svc.admin(), "GET", "/metrics", None);
    let types: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let dash = std::fs::read_to_string(repo().join("deploy/grafana/pincoderouting.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&dash).unwrap();
    let mut names = Vec::new();
    for p in v["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(i) = rest.find("pincoderouting_") {
                let tail = &rest[i..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                names.push(tail[..end].to_string());
                rest = &tail[end..];
            }
        }
    }
    assert!(names.len() > 10);
    for n in names {
        let base = n
            .strip_suffix("_bucket")
            .or_else(|| n.strip_suffix("_total"))
            .unwrap_or(&n);
        assert!(
            types.contains(&base),
            "dashboard reads {n}, not exported:\n{text}"
        );
    }
}

/// logrotate moves the audit file away, then reloads: the service writes a new file.
#[test]
fn reload_reopens_the_audit_file() {
    let svc = Service::launch_full(
        "127.0.0.1",
        "info",
        "",
        "",
        "max_attempts = 1\nfirst_digit_timeout_secs = 1\n",
        "[audit]\nfile = \"audit.log\"\n",
    );
    let audit = svc.dir.join("audit.log");
    let call = |id: &str| {
        let mut pbx = RawPbx::new(svc.udp, id);
        let ok = pbx.call("+15551234567");
        pbx.bye(&ok);
        pbx.wait(Duration::from_secs(5), |g| {
            g.status() == Some(200) && g.text.contains("BYE")
        });
        std::thread::sleep(Duration::from_millis(200));
    };
    call("ops-audit-1");
    assert!(std::fs::read_to_string(&audit)
        .unwrap()
        .contains("ops-audit-1"));
    std::fs::rename(&audit, svc.dir.join("audit.log.1")).unwrap();
    svc.signal("HUP");
    svc.wait_for(Duration::from_secs(5), |l| {
        l.iter().any(|e| msg(e) == "configuration reloaded")
    });
    call("ops-audit-2");
    let fresh = std::fs::read_to_string(&audit).unwrap_or_default();
    assert!(
        fresh.contains("ops-audit-2"),
        "new file gets the new record: {fresh}"
    );
    assert!(!fresh.contains("ops-audit-1"));
}
