//! The bodies of the fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer). Each takes arbitrary
//! bytes and must return without panicking, looping or growing without bound. The same
//! functions replay every target's seed corpus and crash regressions in `cargo test`
//! (`tests/fuzz_corpus.rs`), so CI catches a regression without a fuzzer. Time is virtual:
//! the caller hands in `t0`, nothing here reads a clock.
//!
//! Targets: `sip` (a sequence of datagrams, TCP bytes, RTP and clock steps into one
//! Endpoint and the calls it admits), `sdp` (offer -> answer, answer -> negotiation),
//! `rtp` (RTP session + RTCP + RFC 4733 decoder + in-band detector), `info` (SIP INFO DTMF
//! bodies), `wav` (prompt/recording loader, resampler, detector), `config` (the TOML
//! configuration parser).

use crate::call::run::{drain, CallIo};
use crate::call::{Call, CallEvent, CallSetup};
use crate::config::Config;
use crate::crm::{Contact, CrmReply, VerifyReply};
use crate::media::rtp::MAX_RTP_PACKET;
use crate::sip::endpoint::{CallTable, Endpoint, Inbound};
use crate::sip::msg::{frame_stream, Frame};
use crate::sip::sdp::{self, Codec, Direction, LocalMedia, Negotiated, Sdp};
use crate::sip::{Flow, SipTransmit, Transport};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Splits fuzz input into records: `[op][len lo][len hi][len bytes]...`; a short tail is
/// one last record with what is left.
pub fn records(mut data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (&op, rest) = data.split_first()?;
        let (len, rest) = match rest {
            [lo, hi, rest @ ..] => (usize::from(*lo) | usize::from(*hi) << 8, rest),
            _ => (rest.len(), rest),
        };
        let (rec, rest) = rest.split_at_checked(len).unwrap_or((rest, &[]));
        data = rest;
        Some((op, rec))
    })
}

/// Encodes records in the format `records` reads (for seed corpora and tests).
pub fn encode_records(recs: &[(u8, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (op, data) in recs {
        let len = data.len().min(u16::MAX as usize);
        out.push(*op);
        out.extend_from_slice(&(len as u16).to_le_bytes());
        out.extend_from_slice(data.get(..len).unwrap_or_default());
    }
    out
}

/// Record ops of the `sip` target (the low two bits).
pub mod op {
    /// A UDP datagram to the endpoint.
    pub const UDP: u8 = 0;
    /// Bytes on the one TCP connection (framed as the driver frames them).
    pub const TCP: u8 = 1;
    /// An RTP datagram to a call (the op's high bits pick which).
    pub const RTP: u8 = 2;
    /// Advance the clock by the record's first two bytes × 10 ms and fire timers.
    pub const CLOCK: u8 = 3;
}

const SIP_CONFIG: &str = "[sip]\nmax_calls = 4\n\
[[organization]]\nname = \"acme\"\nenabled = true\nmatch_user = [\"pin\"]\n\
pbx_host = \"192.0.2.1\"\npin_success_ext = \"2001\"\npin_failed_ext = \"2002\"\n\
[[organization]]\nname = \"off\"\nmatch_user = [\"off\"]\npbx_host = \"192.0.2.1\"\n\
pin_success_ext = \"2001\"\npin_failed_ext = \"2002\"\n";

/// Most calls the `sip` target keeps, and most records it reads (bounds each run).
const MAX_CALLS: usize = 4;
const MAX_RECORDS: usize = 256;

struct Calls(BTreeMap<String, Call>);

impl CallTable for Calls {
    fn contains(&self, call_id: &str) -> bool {
        self.0.contains_key(call_id)
    }
    fn active(&self) -> usize {
        self.0.len()
    }
}

/// What the driver would do with a call's output: SIP and RTP are dropped, the CRM
/// answers at once with a contact whose PIN is 1234, PIN checks run inline.
struct Io;

impl CallIo for Io {
    fn sip(&mut self, _t: SipTransmit) {}
    fn rtp(&mut self, _data: &[u8], _dest: SocketAddr) {}
    fn rtcp(&mut self, _data: &[u8], _dest: SocketAddr, _port: crate::media::rtcp::RtcpPort) {}
    fn event(&mut self, call: &mut Call, now: Instant, ev: CallEvent) {
        match ev {
            CallEvent::CrmLookup { .. } => {
                let pin = crate::call::verdict::Pin::from_digits("1234")
                    .map(crate::call::verdict::StoredPin::Plain);
                call.handle_crm(
                    now,
                    CrmReply::Found(Contact {
                        id: "c-1".into(),
                        name: "Fuzz".into(),
                        pin,
                    }),
                );
            }
            CallEvent::CheckPin(check) => {
                let r = check.settle_in_memory(now, None);
                call.handle_check(now, r)
            }
            CallEvent::CrmVerify { .. } => {
                call.handle_verify(now, VerifyReply::Error("no webhook".into()))
            }
            _ => {}
        }
    }
}

/// The `sip` target: a sequence of messages into one Endpoint and the calls it admits.
pub fn sip(t0: Instant, data: &[u8]) {
    let Ok(config) = crate::config::parse(SIP_CONFIG, "fuzz") else {
        return;
    };
    let config = Arc::new(config);
    let endpoint = Endpoint::new(config.clone());
    let mut calls = Calls(BTreeMap::new());
    let mut now = t0;
    let mut tcp = Vec::new();
    let mut buf = [0u8; MAX_RTP_PACKET];
    for (op, rec) in records(data).take(MAX_RECORDS) {
        match op & 3 {
            op::UDP => route(&endpoint, &config, &mut calls, now, rec, true),
            op::TCP => {
                tcp.extend_from_slice(rec);
                loop {
                    match frame_stream(&tcp, endpoint.limits()) {
                        Ok(Frame::Incomplete) => break,
                        Ok(Frame::Skip(n)) => {
                            tcp.drain(..n.min(tcp.len()));
                        }
                        Ok(Frame::Message(n)) => {
                            let msg: Vec<u8> = tcp.drain(..n.min(tcp.len())).collect();
                            route(&endpoint, &config, &mut calls, now, &msg, false);
                        }
                        Err(_) => {
                            // The driver answers what it can and closes the connection.
                            let rest = std::mem::take(&mut tcp);
                            route(&endpoint, &config, &mut calls, now, &rest, false);
                            break;
                        }
                    }
                }
            }
            op::RTP => {
                let n = usize::from(op >> 2);
                if let Some(call) = calls.0.values_mut().nth(n % MAX_CALLS) {
                    call.handle_rtp(now, SocketAddr::from(([192, 0, 2, 1], 4000)), rec);
                }
            }
            _ => {
                let step = match rec {
                    [a, b, ..] => u64::from(u16::from_le_bytes([*a, *b])),
                    [a] => u64::from(*a),
                    [] => 1,
                };
                now += Duration::from_millis(step * 10);
                for call in calls.0.values_mut() {
                    call.handle_timeout(now);
                }
            }
        }
        for call in calls.0.values_mut() {
            let _ = drain(call, now, &mut Io, &mut buf);
        }
        calls.0.retain(|_, c| !c.is_done());
    }
}

/// One message into the endpoint; a new call is built as the driver builds it.
fn route(
    endpoint: &Endpoint,
    config: &Arc<Config>,
    calls: &mut Calls,
    now: Instant,
    bytes: &[u8],
    datagram: bool,
) {
    let flow = Flow {
        transport: if datagram {
            Transport::Udp
        } else {
            Transport::Tcp
        },
        conn: 0,
        remote: SocketAddr::from(([192, 0, 2, 1], 5060)),
    };
    match endpoint.handle(flow, bytes, datagram, calls) {
        Inbound::ToCall(msg) => {
            if let Some(call) = calls.0.get_mut(msg.call_id()) {
                call.handle_sip(now, msg, flow);
            }
        }
        Inbound::NewCall(adm) if calls.0.len() < MAX_CALLS => {
            let call_id = adm.invite.call_id().to_string();
            let setup = CallSetup {
                invite: adm.invite,
                offer: adm.offer,
                flow,
                local_sip: SocketAddr::from(([192, 0, 2, 10], 5060)),
                media: LocalMedia {
                    ip: [192, 0, 2, 10].into(),
                    port: 10000,
                    session_id: 1,
                },
                seed: 7,
                org: adm.org,
                caller: adm.caller,
                lockout: false,
                wall_clock: crate::media::rtcp::WallClock {
                    at: now,
                    since_unix: Duration::from_secs(1_700_000_000),
                },
            };
            if let Ok(call) = Call::new(now, config.clone(), setup) {
                calls.0.insert(call_id, call);
            }
        }
        _ => {}
    }
}

/// The `sdp` target: the body as an offer (answered with either codec preference) and as
/// the answer to our offer.
pub fn sdp(data: &[u8]) {
    let Ok(s) = Sdp::parse(data) else { return };
    let local = LocalMedia {
        ip: [192, 0, 2, 10].into(),
        port: 10000,
        session_id: 1,
    };
    for prefs in [&[Codec::Pcmu, Codec::Pcma][..], &[Codec::Pcma]] {
        if let Ok((neg, body)) = sdp::answer(&s, prefs, 20, &local, 1) {
            // Our answer must be SDP we can read, with one m= line per offered stream.
            let Ok(again) = Sdp::parse(body.as_bytes()) else {
                fail("our SDP answer does not parse");
                return;
            };
            if body.matches("\r\nm=").count() != s.media_count() {
                fail("the answer must keep the offer's m= lines");
            }
            let _ = sdp::accept_answer(&again, prefs, 20);
            let _ = neg;
        }
        let _ = sdp::accept_answer(&s, prefs, 20);
    }
}

/// The `rtp` target: byte 0 picks the negotiation (codec, telephone-event payload type,
/// ptime, rtcp-mux); then records of RTP datagrams (op bits 0-1: source variant), RTCP
/// datagrams (op bit 6; bit 5: on the RTP port) and clock steps (op bit 7).
pub fn rtp(t0: Instant, data: &[u8]) {
    use crate::media::dtmf::inband::InbandDetector;
    use crate::media::dtmf::rfc4733::Rfc4733Decoder;
    use crate::media::rtp::{RtpPayload, RtpSession};
    let Some((&setup, data)) = data.split_first() else {
        return;
    };
    let codec = if setup & 1 == 0 {
        Codec::Pcmu
    } else {
        Codec::Pcma
    };
    let neg = Negotiated {
        codec,
        pt: codec.static_pt(),
        te_pt: (setup & 2 != 0).then_some(96 + (setup >> 4)),
        ptime_ms: 10 * (1 + u32::from((setup >> 2) & 3)),
        remote: Some(SocketAddr::from(([192, 0, 2, 1], 4000))),
        direction: Direction::SendRecv,
        rtcp_mux: setup & 0x40 != 0,
        rtcp: Some(SocketAddr::from(([192, 0, 2, 1], 4001))),
    };
    let mut now = t0;
    let rtcp = crate::media::rtcp::RtcpSetup {
        seed: 1,
        wall_clock: crate::media::rtcp::WallClock {
            at: now,
            since_unix: Duration::from_secs(1_700_000_000),
        },
    };
    let mut s = RtpSession::new(now, neg, 0x1234, 1, 160).with_rtcp(now, rtcp);
    let mut dec = Rfc4733Decoder::new();
    let mut det = InbandDetector::new();
    let table = crate::media::g711::decode_table_f32(codec);
    for (op, rec) in records(data).take(MAX_RECORDS) {
        if op & 0x80 != 0 {
            now += Duration::from_millis(u64::from(op & 0x7f) * 5);
            let _ = dec.handle_timeout(now);
            continue;
        }
        let src = SocketAddr::from(([192, 0, 2, 1 + (op & 1)], 4000 + u16::from(op & 2)));
        if op & 0x40 != 0 {
            // RTCP, on its own port or muxed on the RTP port (RFC 5761).
            let via = if op & 0x20 != 0 {
                crate::media::rtcp::RtcpPort::Rtp
            } else {
                crate::media::rtcp::RtcpPort::Rtcp
            };
            let _ = s.is_muxed_rtcp(rec);
            s.handle_rtcp(now, src, rec, via);
            continue;
        }
        match s.handle_packet(now, src, rec) {
            Ok(RtpPayload::Event {
                payload,
                timestamp,
                marker,
            }) => {
                let _ = dec.handle(now, timestamp, marker, payload);
            }
            Ok(RtpPayload::Audio(p)) => {
                det.process_g711(p, table);
                while det.poll_event().is_some() {}
            }
            Ok(RtpPayload::ComfortNoise) | Err(_) => {}
        }
    }
}

/// The `info` target: byte 0 picks the Content-Type; the rest is the INFO body.
pub fn info(data: &[u8]) {
    let Some((&ct, body)) = data.split_first() else {
        return;
    };
    let ct = match ct % 4 {
        0 => Some("application/dtmf-relay"),
        1 => Some("application/dtmf"),
        2 => Some("Application/DTMF-Relay; charset=utf-8"),
        _ => None,
    };
    let _ = crate::media::dtmf::info::parse(ct, body);
}

/// The `wav` target: the loader (8 kHz and any rate), the resampler and the detector.
pub fn wav(data: &[u8]) {
    let _ = crate::media::wav::read(data);
    if let Ok((rate, pcm)) = crate::media::wav::read_any_rate(data) {
        // Bounded: a fuzzer's WAV is small, but the resampler and detector see it all.
        let pcm = pcm.get(..pcm.len().min(48_000)).unwrap_or_default();
        let _ = crate::media::prompt::resample_to_8k(pcm, rate);
    }
    let _ = crate::tools::dtmf_detect::detect_wav(
        data.get(..data.len().min(100_000)).unwrap_or_default(),
    );
}

/// The `config` target: the TOML text through the whole validation.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::config::parse(text, "fuzz");
        let _ = crate::config::parse_organizations(text, "fuzz");
    }
}

/// A property a target checks was broken: a crash for the fuzzer, a failure for the test.
#[allow(clippy::panic)] // Invariant: fuzz-only oracle; never reached from the service.
fn fail(what: &str) {
    panic!("fuzz oracle: {what}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_tolerate_short_tails() {
        let enc = encode_records(&[(op::UDP, b"abc"), (op::CLOCK, b""), (op::RTP, b"x")]);
        let got: Vec<(u8, &[u8])> = records(&enc).collect();
        assert_eq!(
            got,
            vec![
                (op::UDP, &b"abc"[..]),
                (op::CLOCK, &b""[..]),
                (op::RTP, &b"x"[..])
            ]
        );
        // A length past the end takes what is there; a lone op byte is an empty record.
        assert_eq!(
            records(&[0, 9, 0, b'a']).collect::<Vec<_>>(),
            vec![(0, &b"a"[..])]
        );
        assert_eq!(records(&[3]).collect::<Vec<_>>(), vec![(3, &b""[..])]);
        assert_eq!(records(&[3, 7]).collect::<Vec<_>>(), vec![(3, &[7u8][..])]);
    }

    #[test]
    fn the_sip_target_really_runs_a_call() {
        // The seed of a PIN call must get as far as a CRM lookup and a PIN check; a
        // target that silently stopped at admission would fuzz nothing but the parser.
        let sdp = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        let inv = format!(
            "INVITE sip:pin@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport\r\n\
From: <sip:+15551234567@192.0.2.1>;tag=a\r\nTo: <sip:pin@192.0.2.10>\r\nCall-ID: t1\r\n\
CSeq: 1 INVITE\r\nContact: <sip:pbx@192.0.2.1>\r\nContent-Type: application/sdp\r\n\
Content-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        );
        let config = Arc::new(crate::config::parse(SIP_CONFIG, "t").unwrap());
        let ep = Endpoint::new(config.clone());
        let mut calls = Calls(BTreeMap::new());
        let t0 = crate::testutil::epoch();
        route(&ep, &config, &mut calls, t0, inv.as_bytes(), true);
        assert_eq!(calls.0.len(), 1, "the INVITE became a call");
        let mut buf = [0u8; MAX_RTP_PACKET];
        let call = calls.0.values_mut().next().unwrap();
        assert!(drain(call, t0, &mut Io, &mut buf).is_some());
        assert!(!call.is_done());
    }
}
