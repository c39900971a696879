//! Black-box: the real binary's run loop drains everything a wake-up produced. A BYE or
//! REFER queued when a prompt ends (inside the RTP send) leaves at once, not one timer later.

// Black-box tests are a driver: they may read the clock.
#![allow(clippy::disallowed_methods)]

mod common;

use common::raw_pbx::{wav_ms, RawPbx};
use common::*;
use std::time::Duration;

/// After a refused transfer the caller hears "transfer failed", then we hang up: the BYE
/// must follow the end of that prompt within a frame or two, not wait for a timer
/// (0.5 s and twice on UDP when the drain order was wrong). Also: our requests carry the
/// right headers (Allow lists NOTIFY; BYE has no Contact).
#[test]
fn bye_leaves_as_the_last_prompt_ends_not_a_timer_later() {
    let svc = Service::launch_full(
        "127.0.0.1",
        "info",
        "",
        "",
        "max_attempts = 1\nfirst_digit_timeout_secs = 1\ntransfer_fallback = \"\"",
        "",
    );
    let mut pbx = RawPbx::new(svc.udp, "loop-bye-1");
    let ok = pbx.call("+15551234567");
    let allow = ok.header("Allow").unwrap_or_default();
    assert!(allow.contains("NOTIFY"), "Allow: {allow}");
    // No digits: after the prompt and the first-digit timeout, the failure REFER.
    let (refer, _) = pbx.wait(Duration::from_secs(30), |g| g.method() == Some("REFER"));
    assert!(refer.header("Refer-To").unwrap().contains("1002"));
    pbx.send(&refer.reply(403, "Forbidden"));
    let sent_403 = std::time::Instant::now();
    let (bye, _) = pbx.wait(Duration::from_secs(30), |g| g.method() == Some("BYE"));
    pbx.send(&bye.reply(200, "OK"));
    assert!(
        bye.header("Contact").is_none(),
        "BYE has no Contact:\n{}",
        bye.text
    );
    let prompt = wav_ms(&repo().join("sip-config/prompts/transfer_failed.wav"));
    let took = bye.at.duration_since(sent_403).as_millis() as u64;
    assert!(
        took + 60 >= prompt && took <= prompt + 250,
        "BYE {took} ms after the 403; the transfer_failed prompt lasts {prompt} ms"
    );
    // One BYE: nothing is retransmitted once answered promptly.
    let more: Vec<_> = std::iter::from_fn(|| pbx.recv(Duration::from_millis(700)))
        .filter(|g| g.method() == Some("BYE"))
        .collect();
    assert!(more.is_empty(), "BYE sent again: {more:#?}");
    let rec = svc.wait_for(Duration::from_secs(5), |l| {
        l.iter().any(|e| msg(e) == "call ended")
    });
    assert!(rec.iter().any(|e| msg(e) == "call ended"));
}
