//! Black-box: the lockout shared in a real Redis (Debian's redis-server, started here on a
//! loopback port of its own) by two instances of the real binary. Wrong PINs spread over
//! both lock the number out on both; with Redis gone, no caller is verified (fail closed).

// Black-box tests are a driver: they may read the clock.
#![allow(clippy::disallowed_methods)]

mod common;

use common::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is needed: apt-get install -y redis-server");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Redis {
            child,
            port,
            _dir: dir,
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn instance(redis_port: u16) -> Service {
    Service::launch_full(
        "127.0.0.1",
        "info",
        "",
        "",
        "max_attempts = 1\nfirst_digit_timeout_secs = 2\ninter_digit_timeout_secs = 2\n",
        &format!(
            "[audit]\nfile = \"audit.log\"\n[security]\nlockout_failures = 3\n\
             store = \"redis://127.0.0.1:{redis_port}/0\"\nstore_timeout_ms = 300\n"
        ),
    )
}

/// One SIPp PIN call to `svc` playing `pcap`; the audit outcome of that call.
fn call(svc: &Service, pcap: &str) -> String {
    let before = svc.audit_calls().len();
    let mp = free_udp_port().to_string();
    let out = sipp_with_files(
        "uac_pin_transfer.xml",
        svc.udp,
        &["-m", "1", "-mp", &mp, "-key", "caller", "+15551234567"],
        &[(repo().join("scenarios/pcap").join(pcap), "dtmf.pcap")],
    );
    assert!(out.status.success(), "SIPp call with {pcap}");
    let start = Instant::now();
    loop {
        let recs = svc.audit_calls();
        if recs.len() > before {
            return recs[before]["outcome"].as_str().unwrap_or("").to_string();
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no audit record");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn wrong_pins_spread_over_two_instances_lock_the_number_on_both_and_redis_down_fails_closed() {
    assert!(sipp_available(), "apt-get install -y sip-tester");
    let mut redis = Redis::start();
    let a = instance(redis.port);
    let b = instance(redis.port);
    // Three wrong PINs, one call each, alternating instances: the third locks.
    assert_eq!(call(&a, "rfc4733_wrong1.pcap"), "wrong_pin");
    assert_eq!(call(&b, "rfc4733_wrong1.pcap"), "wrong_pin");
    assert_eq!(call(&a, "rfc4733_wrong1.pcap"), "locked_out");
    // A new call on the other instance is locked out before it is asked anything: the
    // REFER to the failure extension comes at once.
    let mut pbx = common::raw_pbx::RawPbx::new(b.udp, "redis-locked-1");
    pbx.call("+15551234567");
    let (refer, _) = pbx.wait(Duration::from_secs(5), |g| g.method() == Some("REFER"));
    assert!(refer.header("Refer-To").unwrap().contains("1002"));
    pbx.accept_refer(&refer, 200);
    let (bye, _) = pbx.wait(Duration::from_secs(5), |g| g.method() == Some("BYE"));
    pbx.send(&bye.reply(200, "OK"));
    // The record is written when our BYE's 200 has been taken: wait for it.
    let recs = b.wait_audit_calls(2, Duration::from_secs(10));
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert_eq!(recs[1]["outcome"], "locked_out");
    // The state is in Redis, with expiry.
    let out = Command::new("redis-cli")
        .args([
            "-p",
            &redis.port.to_string(),
            "--scan",
            "--pattern",
            "pcr:lock:*",
        ])
        .output()
        .unwrap();
    let keys = String::from_utf8_lossy(&out.stdout);
    assert!(keys.contains("number/+15551234567"), "{keys}");
    // Redis gone: the right PIN from another number is not verified (fail closed).
    redis.stop();
    let mp = free_udp_port().to_string();
    let out = sipp_with_files(
        "uac_pin_transfer.xml",
        a.udp,
        &["-m", "1", "-mp", &mp, "-key", "caller", "+15557654321"],
        &[(repo().join("scenarios/pcap/rfc4733_pin.pcap"), "dtmf.pcap")],
    );
    assert!(out.status.success());
    // SIPp may exit before we have taken the 200 to our BYE (the record's moment).
    let recs = a.wait_audit_calls(3, Duration::from_secs(10));
    assert_eq!(recs.len(), 3, "{recs:?}");
    let last = recs.last().unwrap();
    assert_eq!(last["outcome"], "lockout_unavailable", "{last}");
    assert_eq!(last["transfer_target"], "1002");
    assert!(
        recs.iter().all(|r| r["outcome"] != "verified"),
        "no verified transfer in this test: {recs:?}"
    );
}
