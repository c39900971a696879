//! Black-box: the real binary on loopback, real SIPp scenarios from `scenarios/`.
//! `.ci/run` installs SIPp (Debian package `sip-tester`); without it these tests fail
//! loudly rather than pass silently.

// Black-box tests drive real processes: they may read the clock.
#![allow(clippy::disallowed_methods)]

mod common;

use common::*;
use std::time::Duration;

fn require_sipp() {
    assert!(
        sipp_available(),
        "sipp not found: apt-get install -y sip-tester (see .ci/run)"
    );
}

/// Waits for `calls` "call ended" log lines and checks each: the PBX hung up, we sent at
/// least `tx` RTP packets and got at least `rx` back (SIPp's echo), none ignored. The log.
fn echoed_calls_ended(svc: &Service, calls: usize, tx: u64, rx: u64) -> Vec<serde_json::Value> {
    let log = svc.wait_for(Duration::from_secs(10), |l| {
        l.iter().filter(|e| msg(e) == "call ended").count() >= calls
    });
    for e in log.iter().filter(|e| msg(e) == "call ended") {
        assert_eq!(field(e, "reason"), "RemoteBye", "{e}");
        assert!(num(e, "rtp_tx") >= tx, "we sent RTP: {e}");
        assert!(num(e, "rtp_rx") >= rx, "RTP came back from SIPp: {e}");
        assert_eq!(num(e, "rtp_rx_ignored"), 0, "{e}");
    }
    log
}

#[test]
fn basic_call_rtp_both_ways_then_bye_from_pbx_udp_and_tcp() {
    require_sipp();
    let svc = Service::start("", "");
    for (target, transport) in [(svc.udp, "u1"), (svc.tcp, "t1")] {
        let mp = free_udp_port().to_string();
        let out = sipp(
            "uac_basic.xml",
            target,
            &[
                "-t",
                transport,
                "-m",
                "1",
                "-d",
                "2000",
                "-rtp_echo",
                "-mp",
                &mp,
            ],
        );
        assert!(out.status.success(), "sipp basic call over {transport}");
    }
    // 2 s of 20 ms frames: ~100 sent; SIPp echoed them back to us.
    echoed_calls_ended(&svc, 2, 90, 80);
}

#[test]
fn pcma_audio_played_by_sipp_is_received() {
    require_sipp();
    let pcap = "/usr/share/sip-tester/g711a.pcap";
    assert!(exists(pcap), "{pcap} ships with sip-tester");
    let svc = Service::start("", "");
    let mp = free_udp_port().to_string();
    let out = sipp(
        "uac_pcap_audio.xml",
        svc.udp,
        &["-m", "1", "-d", "3000", "-mp", &mp],
    );
    assert!(out.status.success());
    let log = svc.wait_for(Duration::from_secs(10), |l| {
        l.iter().any(|e| msg(e) == "call ended")
    });
    let e = log.iter().find(|e| msg(e) == "call ended").unwrap();
    assert!(num(e, "rtp_rx") >= 50, "PCMA from the pcap reached us: {e}");
}

#[test]
fn cancel_before_answer_gets_487() {
    require_sipp();
    let svc = Service::start("ring_ms = 3000", "");
    let out = sipp("uac_cancel.xml", svc.udp, &["-m", "1"]);
    assert!(out.status.success());
    let log = svc.wait_for(Duration::from_secs(10), |l| {
        l.iter().any(|e| msg(e) == "call ended")
    });
    let e = log.iter().find(|e| msg(e) == "call ended").unwrap();
    assert_eq!(field(e, "reason"), "Cancelled");
    assert_eq!(field(e, "answered"), "false");
}

#[test]
fn options_ping_gets_200_over_udp_and_tcp() {
    require_sipp();
    let svc = Service::start("", "");
    assert!(sipp("options.xml", svc.udp, &["-m", "3"]).status.success());
    assert!(sipp("options.xml", svc.tcp, &["-t", "t1", "-m", "3"])
        .status
        .success());
}

#[test]
fn unsupported_codec_gets_488_with_warning() {
    require_sipp();
    let svc = Service::start("", "");
    assert!(sipp("uac_unsupported_codec.xml", svc.udp, &["-m", "2"])
        .status
        .success());
    assert!(
        svc.ended().is_empty(),
        "a refused offer never becomes a call"
    );
}

#[test]
fn hundred_concurrent_calls_all_complete() {
    require_sipp();
    let svc = Service::start("", "");
    let mp = free_udp_port().to_string();
    let out = sipp(
        "uac_basic.xml",
        svc.udp,
        &[
            "-l",
            "100",
            "-m",
            "200",
            "-r",
            "200",
            "-d",
            "1500",
            "-rtp_echo",
            "-mp",
            &mp,
        ],
    );
    assert!(out.status.success(), "all 200 calls succeed");
    let log = svc.wait_for(Duration::from_secs(20), |l| {
        l.iter().filter(|e| msg(e) == "call ended").count() >= 200
    });
    let ended: Vec<_> = log.iter().filter(|e| msg(e) == "call ended").collect();
    assert_eq!(ended.len(), 200);
    assert!(ended.iter().all(|e| field(e, "reason") == "RemoteBye"));
    let no_media = ended.iter().filter(|e| num(e, "rtp_rx") == 0).count();
    assert_eq!(no_media, 0, "every call had RTP both ways");
}

#[test]
fn ipv6_call_with_rtp_both_ways() {
    require_sipp();
    let svc = Service::start_on("::1", "", "");
    assert!(svc.udp.is_ipv6());
    let mp = free_udp_port().to_string();
    let out = sipp(
        "uac_basic.xml",
        svc.udp,
        &[
            "-m",
            "1",
            "-d",
            "1500",
            "-rtp_echo",
            "-mp",
            &mp,
            "-mi",
            "::1",
        ],
    );
    assert!(out.status.success(), "IPv6 call");
    let log = svc.wait_for(Duration::from_secs(10), |l| {
        l.iter().any(|e| msg(e) == "call ended")
    });
    let e = log.iter().find(|e| msg(e) == "call ended").unwrap();
    assert_eq!(field(e, "reason"), "RemoteBye");
    assert!(num(e, "rtp_rx") > 30 && num(e, "rtp_tx") > 30, "{e}");
}

#[test]
fn pin_digits_arrive_as_rfc4733_and_as_inband_tones() {
    require_sipp();
    // No terminator: "1234#" is five digits of an entry still open when SIPp hangs up, so
    // no verdict (and no REFER, which this scenario does not expect) comes first.
    let svc = Service::launch_full(
        "127.0.0.1",
        "info,pincoderouting::driver::call_task=debug",
        "",
        "",
        "terminator = \"\"",
        "",
    );
    let cases = [
        ("uac_dtmf_rfc4733.xml", "rfc4733_pin.pcap", "rfc4733"),
        ("uac_dtmf_inband.xml", "inband_pin.pcap", "inband"),
    ];
    for (scenario, pcap, _) in cases {
        let mp = free_udp_port().to_string();
        let out = sipp_with_files(
            scenario,
            svc.udp,
            &["-m", "1", "-d", "3500", "-mp", &mp],
            &[(repo().join("scenarios/pcap").join(pcap), "dtmf.pcap")],
        );
        assert!(out.status.success(), "{scenario}");
    }
    let log = svc.wait_for(Duration::from_secs(10), |l| {
        l.iter().filter(|e| msg(e) == "call ended").count() >= 2
    });
    let ended: Vec<_> = log.iter().filter(|e| msg(e) == "call ended").collect();
    for (e, (_, _, source)) in ended.iter().zip(cases) {
        // "1234#": five keys, each reported once, from the expected source only.
        assert_eq!(num(e, "digit_count"), 5, "{source}: {e}");
        let id = call_id(e);
        let digits: Vec<_> = log
            .iter()
            .filter(|l| msg(l) == "digit received" && call_id(l) == id)
            .map(|l| field(l, "source"))
            .collect();
        assert_eq!(digits, vec![source; 5], "{source}");
    }
    // The digits themselves never reach the log, in any field of any line.
    for l in &log {
        let fields = l["fields"].to_string();
        assert!(
            !fields.contains("1234#"),
            "digits leaked into the log: {fields}"
        );
        assert!(l["fields"].get("digit").is_none(), "{fields}");
    }
}

#[test]
fn caller_hears_the_shipped_enter_pin_prompt_byte_for_byte() {
    require_sipp();
    use pincoderouting::media::prompt::Prompt;
    use pincoderouting::sip::sdp::Codec;
    let svc = Service::start("", "");
    // We stand in for the caller's media: SIPp's SDP points our RTP here.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let port = sock.local_addr().unwrap().port().to_string();
    let receiver = std::thread::spawn(move || {
        let mut got: Vec<(u16, bool, Vec<u8>)> = Vec::new();
        let mut buf = [0u8; 2048];
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(8) {
            if let Ok(n) = sock.recv(&mut buf) {
                let seq = u16::from_be_bytes([buf[2], buf[3]]);
                got.push((seq, buf[1] & 0x80 != 0, buf[12..n].to_vec()));
            }
        }
        got
    });
    let out = sipp(
        "uac_prompt.xml",
        svc.udp,
        &["-m", "1", "-d", "5500", "-key", "rtp_port", &port],
    );
    assert!(out.status.success());
    let got = receiver.join().unwrap();
    let prompt = Prompt::load(
        "enter_pin",
        &repo().join("sip-config/prompts/enter_pin.wav"),
    )
    .unwrap();
    let want = prompt.bytes(Codec::Pcmu);
    assert!(
        got[0].1,
        "marker on the first packet: {:?}",
        got.iter()
            .take(5)
            .map(|g| (g.0, g.1, g.2.len(), g.2.get(..4).map(|b| b.to_vec())))
            .collect::<Vec<_>>()
    );
    for w in got.windows(2) {
        assert_eq!(
            w[1].0,
            w[0].0.wrapping_add(1),
            "in order, none lost on loopback"
        );
    }
    let audio: Vec<u8> = got.iter().flat_map(|p| p.2.clone()).collect();
    assert!(
        audio.len() >= want.len(),
        "{} of {} bytes",
        audio.len(),
        want.len()
    );
    assert_eq!(&audio[..want.len()], want, "the prompt, byte for byte");
    assert!(
        audio[want.len()..].iter().all(|b| *b == 0xFF),
        "then comfort silence"
    );
}

#[test]
fn pin_calls_end_in_the_right_transfer_with_one_audit_record_each() {
    require_sipp();
    let svc = Service::launch_full(
        "127.0.0.1",
        "info",
        "",
        "",
        "first_digit_timeout_secs = 1\ninter_digit_timeout_secs = 1\n",
        "[audit]\nfile = \"audit.log\"\n",
    );
    // (capture, calling number, expected result, expected extension)
    let cases = [
        (
            "rfc4733_pin.pcap",
            "uac_pin_transfer.xml",
            "+15551234567",
            "verified",
            "1001",
        ),
        (
            "rfc4733_wrong3.pcap",
            "uac_pin_transfer.xml",
            "+15551234567",
            "wrong_pin",
            "1002",
        ),
        (
            "rfc4733_none.pcap",
            "uac_pin_transfer.xml",
            "+15551234567",
            "no_input",
            "1002",
        ),
        (
            "rfc4733_pin.pcap",
            "uac_pin_transfer.xml",
            "+15550001111",
            "unknown_caller",
            "1002",
        ),
    ];
    // The calls run at the same time (each SIPp in its own directory).
    let target = svc.udp;
    let runs: Vec<_> = cases
        .iter()
        .map(|(pcap, scenario, caller, _, _)| {
            let (pcap, scenario, caller) =
                (pcap.to_string(), scenario.to_string(), caller.to_string());
            std::thread::spawn(move || {
                let mp = free_udp_port().to_string();
                let out = sipp_with_files(
                    &scenario,
                    target,
                    &["-m", "1", "-mp", &mp, "-key", "caller", &caller],
                    &[(repo().join("scenarios/pcap").join(&pcap), "dtmf.pcap")],
                );
                (pcap, caller, out.status.success())
            })
        })
        .collect();
    for r in runs {
        let (pcap, caller, ok) = r.join().unwrap();
        assert!(ok, "{pcap} from {caller}");
    }
    let log = svc.wait_for(Duration::from_secs(10), |l| {
        l.iter().filter(|e| msg(e) == "call ended").count() >= cases.len()
    });
    let ended: Vec<_> = log.iter().filter(|e| msg(e) == "call ended").collect();
    assert!(
        ended.iter().all(|e| field(e, "reason") == "Transferred"),
        "{ended:?}"
    );
    let records = svc.audit_calls();
    assert_eq!(records.len(), cases.len(), "one audit record per call");
    for (pcap, _, caller, result, ext) in cases {
        // Match each case to its record by what it did.
        let r = records
            .iter()
            .find(|r| r["caller_e164"] == caller && r["outcome"] == result)
            .unwrap_or_else(|| panic!("no {result} record for {pcap} from {caller}: {records:?}"));
        assert_eq!(r["outcome"], result, "{pcap} from {caller}: {r}");
        assert_eq!(r["transfer_target"], ext, "{r}");
        assert_eq!(r["transfer_outcome"], "transferred", "{r}");
        assert_eq!(r["caller_e164"], caller, "{r}");
        assert_eq!(r["organization"], "default");
        // Never the digits (the PIN is 1234, the wrong one 9999).
        let text = r.to_string();
        assert!(!text.contains("1234#") && !text.contains("9999"), "{text}");
    }
    let verified = records.iter().find(|r| r["outcome"] == "verified").unwrap();
    assert_eq!(verified["contact_id"], "demo-1");
}

#[test]
fn inband_pin_is_verified_too() {
    require_sipp();
    let svc = Service::launch_full(
        "127.0.0.1",
        "info",
        "",
        "",
        "",
        "[audit]\nfile = \"audit.log\"\n",
    );
    // The in-band scenario offers no telephone-event, so `auto` listens to the audio.
    let mp = free_udp_port().to_string();
    let out = sipp_with_files(
        "uac_pin_transfer_inband.xml",
        svc.udp,
        &["-m", "1", "-mp", &mp, "-key", "caller", "+15551234567"],
        &[(repo().join("scenarios/pcap/inband_pin.pcap"), "dtmf.pcap")],
    );
    assert!(out.status.success());
    let r = &svc.wait_audit_calls(1, Duration::from_secs(10))[0];
    assert_eq!(r["outcome"], "verified", "{r}");
    assert_eq!(r["digit_source"], "inband", "{r}");
    assert_eq!(r["transfer_target"], "1001");
}

#[test]
fn http_crm_verifies_and_a_crm_that_is_down_sends_callers_to_the_failure_ext() {
    use common::http_crm::{Behave, HttpCrm};
    require_sipp();
    let crm = HttpCrm::start(Behave::Json(
        r#"{"results":[{"id":"crm-55","pin":"1234"}]}"#.into(),
    ));
    for (url, result, ext) in [
        (crm.url(), "verified", "1001"),
        // Nothing listens on port 9 (discard): connection refused.
        (
            "http://127.0.0.1:9/c?phone={phone}".to_string(),
            "crm_error",
            "1002",
        ),
    ] {
        let tail = format!(
            "[audit]\nfile = \"audit.log\"\n[crm]\nkind = \"http_lookup\"\n[crm.http]\n\
             url = \"{url}\"\ncontacts_pointer = \"/results\"\ntimeout_ms = 1500\n"
        );
        let svc = Service::launch_full("127.0.0.1", "info", "", "", "", &tail);
        let mp = free_udp_port().to_string();
        let out = sipp_with_files(
            "uac_pin_transfer.xml",
            svc.udp,
            &["-m", "1", "-mp", &mp, "-key", "caller", "+15551234567"],
            &[(repo().join("scenarios/pcap/rfc4733_pin.pcap"), "dtmf.pcap")],
        );
        assert!(out.status.success(), "{result}");
        let r = &svc.wait_audit_calls(1, Duration::from_secs(10))[0];
        assert_eq!(r["outcome"], result, "{r}");
        assert_eq!(r["transfer_target"], ext, "{r}");
        if result == "verified" {
            // The CRM answered while the prompt played, and a PIN it hands out is
            // compared in the step that took the `#`: the REFER leaves in that step.
            assert_eq!(r["entry_to_refer_ms"], 0, "{r}");
        }
    }
    assert!(crm.requests()[0].0.contains("phone=%2B15551234567"));
}

#[test]
fn verify_webhook_judges_the_pin() {
    use common::http_crm::{Behave, HttpCrm};
    require_sipp();
    let crm = HttpCrm::start(Behave::VerifyPin("1234".into()));
    let tail = format!(
        "[audit]\nfile = \"audit.log\"\n[crm]\nkind = \"http_verify\"\n[crm.http]\n\
         url = \"http://{}/verify\"\ntimeout_ms = 1500\n",
        crm.addr
    );
    let svc = Service::launch_full("127.0.0.1", "info", "", "", "", &tail);
    let mp = free_udp_port().to_string();
    let out = sipp_with_files(
        "uac_pin_transfer.xml",
        svc.udp,
        &["-m", "1", "-mp", &mp, "-key", "caller", "+15550001111"],
        &[(repo().join("scenarios/pcap/rfc4733_pin.pcap"), "dtmf.pcap")],
    );
    assert!(out.status.success());
    let r = &svc.wait_audit_calls(1, Duration::from_secs(10))[0];
    assert_eq!(r["outcome"], "verified", "{r}");
    assert_eq!(r["contact_id"], "crm-9");
    assert_eq!(r["transfer_target"], "1001");
    let body: serde_json::Value = serde_json::from_str(&crm.bodies()[0]).unwrap();
    assert_eq!(body["caller"], "+15550001111");
    assert_eq!(body["org"], "default");
    assert!(body["call_id"].as_str().is_some_and(|c| !c.is_empty()));
    // The PIN went to the webhook and nowhere else.
    assert!(!svc.raw_log().contains("\"1234\""));
}

#[test]
fn shared_media_socket_tells_concurrent_calls_apart_by_their_source() {
    require_sipp();
    let svc = Service::start("", "shared_socket = true");
    // Four callers at once, each from its own media port (as a PBX gives each call its
    // own); each SIPp echoes what it gets back to where it came from.
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (target, mp) = (svc.udp, free_udp_port().to_string());
            std::thread::spawn(move || {
                sipp(
                    "uac_basic.xml",
                    target,
                    &["-m", "1", "-d", "3000", "-rtp_echo", "-mp", &mp],
                )
            })
        })
        .collect();
    for c in callers {
        assert!(c.join().unwrap().status.success(), "sipp call");
    }
    // 3 s of frames out, and each call got back its own echo, none another's.
    let log = echoed_calls_ended(&svc, 4, 140, 120);
    // The calls shared their loops' ports: at most one port per loop (core).
    let ports: std::collections::BTreeSet<u64> = log
        .iter()
        .filter(|e| msg(e) == "new call")
        .map(|e| num(e, "rtp_port"))
        .collect();
    let loops = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        ports.len() <= loops.min(4),
        "calls share a port per loop: {ports:?}"
    );
}
