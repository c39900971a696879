//! Seeded mutation tests over every parser a peer reaches: SIP messages (datagram and
//! stream framing), SDP, RTP, RTCP. Each input must give a value or an error, never a panic.
//! Also WAV files, the config parser, INFO bodies, RFC 4733 payloads and random audio.
//! (Coverage-guided fuzzing of the same entry points needs a nightly toolchain: `fuzz/`.)

use crate::config::Config;
use crate::media::rtp::RtpSession;
use crate::sip::endpoint::{CallTable, Endpoint};
use crate::sip::msg::{frame_stream, Limits, Message};
use crate::sip::sdp::{self, Codec, Direction, LocalMedia, Negotiated, Sdp};
use crate::sip::{Flow, Transport};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;

const INVITE: &str = "INVITE sip:pin@192.0.2.10 SIP/2.0\r\nv: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK1;rport\r\n\
f: \"A, B\" <sip:+15551234567@192.0.2.1>;tag=a\r\nt: <tel:+15550000>\r\ni: x@y\r\nCSeq: 1 INVITE\r\n\
m: <sip:a@[2001:db8::1]:5060;transport=tcp>;q=\"0.5\"\r\nRecord-Route: <sip:p;lr>, <sip:q>\r\n\
Session-Expires: 1800;refresher=uac\r\nc: application/sdp\r\nl: 120\r\n\r\n\
v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 8 101\r\n\
a=rtpmap:101 telephone-event/8000\r\n";

fn mutate(rng: &mut SmallRng, base: &[u8]) -> Vec<u8> {
    let mut b = base.to_vec();
    for _ in 0..rng.gen_range(1..10) {
        if b.is_empty() {
            b.push(rng.gen());
            continue;
        }
        let i = rng.gen_range(0..b.len());
        match rng.gen_range(0..6) {
            0 => b[i] = rng.gen(),
            1 => {
                b.remove(i);
            }
            2 => b.insert(
                i,
                *b"\r\n:;<>\"[]@, 0"
                    .get(rng.gen_range(0..14))
                    .unwrap_or(&b' '),
            ),
            3 => b.truncate(i),
            4 => {
                let j = rng.gen_range(i..b.len());
                let dup = b[i..j].to_vec();
                b.splice(i..i, dup);
            }
            _ => b[i] = b[i].wrapping_add(1),
        }
    }
    b
}

struct None_;
impl CallTable for None_ {
    fn contains(&self, _: &str) -> bool {
        false
    }
    fn active(&self) -> usize {
        0
    }
}

#[test]
fn sip_and_sdp_parsers_never_panic_on_mutations() {
    let mut rng = SmallRng::seed_from_u64(0x5eed);
    let ep = Endpoint::new(Arc::new(Config::default()));
    let limits = Limits::default();
    let flow = Flow {
        transport: Transport::Udp,
        conn: 0,
        remote: "192.0.2.1:5060".parse().unwrap(),
    };
    let local = LocalMedia {
        ip: "192.0.2.10".parse().unwrap(),
        port: 10000,
        session_id: 1,
    };
    let sdp_body = &INVITE.as_bytes()[INVITE.find("v=0").unwrap()..];
    for _ in 0..20_000 {
        let m = mutate(&mut rng, INVITE.as_bytes());
        let _ = Message::parse(&m, &limits, true);
        let _ = frame_stream(&m, &limits);
        let _ = ep.handle(flow, &m, rng.gen(), &None_);
        let s = mutate(&mut rng, sdp_body);
        if let Ok(o) = Sdp::parse(&s) {
            let _ = sdp::answer(&o, &[Codec::Pcmu, Codec::Pcma], 20, &local, 1);
            let _ = sdp::accept_answer(&o, &[Codec::Pcmu], 20);
        }
    }
}

#[test]
fn rtp_session_never_panics_on_garbage() {
    let mut rng = SmallRng::seed_from_u64(7);
    let t0 = crate::testutil::epoch();
    let neg = Negotiated {
        codec: Codec::Pcmu,
        pt: 0,
        te_pt: Some(101),
        ptime_ms: 20,
        remote: None,
        direction: Direction::SendRecv,
        rtcp_mux: true,
        rtcp: None,
    };
    let mut s = RtpSession::new(t0, neg, 1, 0, 0);
    let mut base = vec![0x80u8, 101, 0, 1, 0, 0, 0, 160, 0, 0, 0, 7, 5, 0x8a, 0, 160];
    base.extend_from_slice(&[0xFF; 160]);
    let src = "192.0.2.1:4000".parse().unwrap();
    for _ in 0..50_000 {
        let p = mutate(&mut rng, &base);
        let _ = s.handle_packet(t0, src, &p);
    }
}

#[test]
fn wav_config_info_and_dtmf_decoders_never_panic() {
    use crate::media::dtmf::inband::InbandDetector;
    use crate::media::dtmf::info;
    use crate::media::dtmf::rfc4733::Rfc4733Decoder;
    let mut rng = SmallRng::seed_from_u64(99);
    let t0 = crate::testutil::epoch();
    // WAV: mutations of a valid file (headers, sizes, formats).
    let wav = crate::media::wav::write_pcm16(&[1000; 400]);
    for _ in 0..20_000 {
        let _ = crate::media::wav::read_any_rate(&mutate(&mut rng, &wav));
    }
    // Config: mutations of the shipped file.
    let cfg = include_str!("../sip-config/pincoderouting.toml");
    for _ in 0..2_000 {
        let m = mutate(&mut rng, cfg.as_bytes());
        if let Ok(text) = std::str::from_utf8(&m) {
            let _ = crate::config::parse(text, "fuzz");
        }
    }
    // INFO bodies, RFC 4733 payloads, and random audio through the in-band detector.
    let mut dec = Rfc4733Decoder::new();
    let mut det = InbandDetector::new();
    let table = crate::media::g711::decode_table_f32(Codec::Pcmu);
    for i in 0..20_000u32 {
        let body = mutate(&mut rng, b"Signal=5\r\nDuration=160\r\n");
        let _ = info::parse(Some("application/dtmf-relay"), &body);
        let _ = info::parse(Some("application/dtmf"), &body);
        let ev = mutate(&mut rng, &[5, 0x8A, 0x03, 0x20]);
        let _ = dec.handle(t0, rng.gen(), rng.gen(), &ev);
        let _ = dec.handle_timeout(t0 + std::time::Duration::from_millis(i as u64));
        let audio: Vec<u8> = (0..rng.gen_range(0..400)).map(|_| rng.gen()).collect();
        det.process_g711(&audio, table);
        while det.poll_event().is_some() {}
    }
}

#[test]
fn rtcp_parser_and_session_never_panic() {
    use crate::media::rtcp::{wire, RtcpPort, RtcpSession, RtcpSetup, WallClock};
    let mut rng = SmallRng::seed_from_u64(13);
    let t0 = crate::testutil::epoch();
    let neg = Negotiated {
        codec: Codec::Pcmu,
        pt: 0,
        te_pt: Some(101),
        ptime_ms: 20,
        remote: Some("192.0.2.1:4000".parse().unwrap()),
        direction: Direction::SendRecv,
        rtcp_mux: true,
        rtcp: Some("192.0.2.1:4000".parse().unwrap()),
    };
    let setup = RtcpSetup {
        seed: 1,
        wall_clock: WallClock {
            at: t0,
            since_unix: std::time::Duration::from_secs(1_700_000_000),
        },
    };
    let mut session = RtcpSession::new(t0, setup, &neg);
    // A valid SR + block + SDES + BYE to mutate, and pure noise.
    let mut base = [0u8; 128];
    let n = wire::write(
        &wire::Report {
            ssrc: 7,
            sender: Some(wire::SenderInfo::default()),
            block: Some(wire::ReportBlock {
                ssrc: 1,
                ..Default::default()
            }),
            cname: b"pbx@192.0.2.1",
            bye: true,
        },
        &mut base,
    )
    .unwrap();
    let src = "192.0.2.1:4000".parse().unwrap();
    let mut valid = 0;
    for i in 0..100_000 {
        let p = if i % 4 == 0 {
            (0..rng.gen_range(0..200)).map(|_| rng.gen()).collect()
        } else {
            mutate(&mut rng, &base[..n])
        };
        if let Ok(c) = wire::parse(&p) {
            valid += 1;
            for pkt in c.packets() {
                if let wire::Packet::ReceiverReport { blocks, .. }
                | wire::Packet::SenderReport { blocks, .. } = pkt
                {
                    let _ = blocks.iter().count();
                }
            }
        }
        session.handle(t0, src, &p, RtcpPort::Rtp, 1);
    }
    assert!(valid > 100, "some mutations stay valid: {valid}");
    // And through the RTP session, which demultiplexes with mux.
    let mut s = RtpSession::new(t0, neg, 1, 0, 0).with_rtcp(t0, setup);
    for _ in 0..20_000 {
        let p = mutate(&mut rng, &base[..n]);
        if s.is_muxed_rtcp(&p) {
            s.handle_rtcp(t0, src, &p, RtcpPort::Rtp);
        } else {
            let _ = s.handle_packet(t0, src, &p);
        }
    }
}
