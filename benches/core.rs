//! Hot paths of the sans-IO core: SIP parse, endpoint routing, and the per-packet RTP work
//! (validate one inbound packet, write one outbound frame), a call's whole frame step, and a
//! call loop's frame scheduling. Run: `cargo bench --bench core`.
#![allow(clippy::disallowed_methods)]

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use pincoderouting::config::Config;
use pincoderouting::media::player::{IdleMode, PlayItem, Player};
use pincoderouting::media::prompt::Prompt;
use pincoderouting::media::rtp::RtpSession;
use pincoderouting::sip::endpoint::{CallTable, Endpoint};
use pincoderouting::sip::msg::{Limits, Message};
use pincoderouting::sip::sdp::{Codec, Direction, Negotiated};
use pincoderouting::sip::{Flow, Transport};
use std::sync::Arc;
use std::time::{Duration, Instant};

const INVITE: &str = "INVITE sip:pincoderouting@192.0.2.10 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;rport\r\nMax-Forwards: 70\r\n\
To: <sip:pincoderouting@192.0.2.10>\r\nFrom: \"Alice\" <sip:+15551234567@192.0.2.1>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33\r\nCSeq: 314159 INVITE\r\nContact: <sip:alice@192.0.2.1:5060>\r\n\
Content-Type: application/sdp\r\nContent-Length: 134\r\n\r\n\
v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 8 101\r\n\
a=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\n";

struct NoCalls;
impl CallTable for NoCalls {
    fn contains(&self, _: &str) -> bool {
        false
    }
    fn active(&self) -> usize {
        0
    }
}

fn sip(c: &mut Criterion) {
    let mut g = c.benchmark_group("sip");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_invite", |b| {
        b.iter(|| Message::parse(black_box(INVITE.as_bytes()), &Limits::default(), true).unwrap())
    });
    let ep = Endpoint::new(Arc::new(Config::default()));
    let flow = Flow {
        transport: Transport::Udp,
        conn: 0,
        remote: "192.0.2.1:5060".parse().unwrap(),
    };
    g.bench_function("admit_invite", |b| {
        b.iter(|| ep.handle(flow, black_box(INVITE.as_bytes()), true, &NoCalls))
    });
    let options = INVITE.replace("INVITE", "OPTIONS");
    g.bench_function("options_reply", |b| {
        b.iter(|| ep.handle(flow, black_box(options.as_bytes()), true, &NoCalls))
    });
    g.finish();
}

fn rtp(c: &mut Criterion) {
    let neg = Negotiated {
        codec: Codec::Pcmu,
        pt: 0,
        te_pt: Some(101),
        ptime_ms: 20,
        remote: Some("192.0.2.1:4000".parse().unwrap()),
        direction: Direction::SendRecv,
        rtcp_mux: false,
        rtcp: Some("192.0.2.1:4001".parse().unwrap()),
    };
    let t0 = Instant::now();
    let src = "192.0.2.1:4000".parse().unwrap();
    let mut g = c.benchmark_group("rtp");
    g.throughput(Throughput::Elements(1));
    let mut pkt = vec![0x80u8, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0, 7];
    pkt.extend_from_slice(&[0xFF; 160]);
    let mut s = RtpSession::new(t0, neg, 1, 0, 0);
    g.bench_function("receive_packet", |b| {
        b.iter(|| s.handle_packet(t0, src, black_box(&pkt)).is_ok())
    });
    let mut s = RtpSession::new(t0, neg, 1, 0, 0);
    let mut buf = [0u8; 1500];
    let mut now = t0;
    // A prompt long enough never to run out during the benchmark.
    let prompt = std::sync::Arc::new(Prompt::from_pcm("bench", &vec![1000i16; 8000 * 600]));
    let mut player = Player::new(IdleMode::Silence);
    player.play(vec![PlayItem::new(prompt)]);
    g.bench_function("send_frame_prompt", |b| {
        b.iter(|| {
            now += Duration::from_millis(20);
            s.poll_transmit(now, &mut buf, &mut player)
        })
    });
    g.finish();
}

/// The sans-IO core's whole per-frame work for one call — what a call loop does when a
/// frame is due: `handle_timeout`, then the drain (player, RTP packetizer, RTCP check,
/// transaction timers) into a sink. The call is answered and ACKed, its prompt playing.
fn call(c: &mut Criterion) {
    use pincoderouting::call::run::{drain, CallIo};
    use pincoderouting::call::{Call, CallEvent, CallSetup};
    use pincoderouting::media::rtcp::{RtcpPort, WallClock};
    use pincoderouting::sip::sdp::{LocalMedia, Sdp};
    use pincoderouting::sip::SipTransmit;
    use std::net::SocketAddr;

    struct Sink(usize, Vec<Vec<u8>>);
    impl CallIo for Sink {
        fn sip(&mut self, t: SipTransmit) {
            if self.1.len() < 8 {
                self.1.push(t.data.to_vec());
            }
        }
        fn rtp(&mut self, data: &[u8], _dest: SocketAddr) {
            self.0 += data.len();
        }
        fn rtcp(&mut self, _data: &[u8], _dest: SocketAddr, _port: RtcpPort) {}
        fn event(&mut self, _call: &mut Call, _now: Instant, _ev: CallEvent) {}
    }

    let invite = Message::parse(INVITE.as_bytes(), &Limits::default(), true).unwrap();
    let offer = Some(Sdp::parse(&invite.body).unwrap());
    let flow = Flow {
        transport: Transport::Udp,
        conn: 0,
        remote: "192.0.2.1:5060".parse().unwrap(),
    };
    let config = pincoderouting::config::parse(
        "[[organization]]\nname = \"acme\"\nenabled = true\nmatch_user = [\"pincoderouting\"]\n\
         pbx_host = \"pbx.acme.example\"\npin_success_ext = \"2001\"\npin_failed_ext = \"2002\"\n",
        "bench",
    )
    .unwrap();
    let org = config.organizations[0].clone();
    let source =
        pincoderouting::sip::source::effective_source(&invite, flow.remote.ip(), &config.sip);
    let caller = pincoderouting::call::identity::caller(&invite, source, &org);
    let media = LocalMedia {
        ip: "192.0.2.10".parse().unwrap(),
        port: 10000,
        session_id: 1,
    };
    let mut sdp_g = c.benchmark_group("sdp");
    let codecs = [Codec::Pcmu, Codec::Pcma];
    let parsed = Sdp::parse(&invite.body).unwrap();
    sdp_g.bench_function("answer", |b| {
        b.iter(|| pincoderouting::sip::sdp::answer(black_box(&parsed), &codecs, 20, &media, 0))
    });
    sdp_g.finish();
    // A fresh call, answered and ACKed, one second into its prompt. A call ends by itself
    // after 30 s without RTP from the peer (media timeout), so each lasts 1,000 frames here.
    let fresh = || {
        let t0 = Instant::now();
        let mut call = Call::new(
            t0,
            Arc::new(config.clone()),
            CallSetup {
                invite: invite.clone(),
                offer: offer.clone(),
                flow,
                local_sip: "192.0.2.10:5060".parse().unwrap(),
                media,
                seed: 7,
                org: org.clone(),
                caller: caller.clone(),
                lockout: false,
                wall_clock: WallClock {
                    at: t0,
                    since_unix: Duration::from_secs(1_700_000_000),
                },
            },
        )
        .unwrap();
        let mut sink = Sink(0, Vec::new());
        let mut buf = [0u8; 1500];
        let mut now = t0;
        drain(&mut call, now, &mut sink, &mut buf);
        let ok = sink
            .1
            .iter()
            .find(|m| m.starts_with(b"SIP/2.0 200"))
            .map(|m| Message::parse(m, &Limits::default(), true).unwrap())
            .expect("200 OK");
        let to = ok.header("To").unwrap().to_string();
        let ack = format!(
            "ACK sip:pbx@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKack\r\n\
             Max-Forwards: 70\r\nTo: {to}\r\nFrom: \"Alice\" <sip:+15551234567@192.0.2.1>;tag=1928301774\r\n\
             Call-ID: a84b4c76e66710@pc33\r\nCSeq: 314159 ACK\r\nContent-Length: 0\r\n\r\n"
        );
        let ack = Message::parse(ack.as_bytes(), &Limits::default(), true).unwrap();
        call.handle_sip(now, ack, flow);
        for _ in 0..60 {
            let Some((at, _)) = drain(&mut call, now, &mut sink, &mut buf) else {
                break;
            };
            now = at;
            call.handle_timeout(now);
        }
        (call, sink, now)
    };
    let mut g = c.benchmark_group("call");
    g.throughput(Throughput::Elements(1));
    g.bench_function("frame_step", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let (mut call, mut sink, mut now) = fresh();
                let mut buf = [0u8; 1500];
                let n = left.min(1000);
                let sent = sink.0;
                let start = Instant::now();
                for _ in 0..n {
                    if let Some((at, _)) = drain(&mut call, now, &mut sink, &mut buf) {
                        now = at;
                    }
                    call.handle_timeout(now);
                }
                spent += start.elapsed();
                assert!(!call.is_done(), "the call was still up");
                assert!(sink.0 - sent >= 160 * (n as usize - 1), "a frame per step");
                left -= n;
            }
            spent
        })
    });
    g.finish();
}

/// A call loop's frame scheduling: 4000 calls, each with a frame due every 20 ms at its own
/// phase; one iteration is one millisecond of the loop (take what is due, file each call's
/// next frame). Throughput: frames scheduled.
fn frame_scheduling(c: &mut Criterion) {
    use pincoderouting::driver::timers::Timers;
    const CALLS: u64 = 4000;
    let mut g = c.benchmark_group("loop");
    g.throughput(Throughput::Elements(CALLS / 20));
    g.bench_function("frame_scheduling_ms", |b| {
        let t0 = Instant::now();
        let mut timers = Timers::new(t0);
        for key in 0..CALLS {
            // Phases spread over the 20 ms, to the microsecond.
            timers.push(t0 + Duration::from_micros(key * 20_000 / CALLS), key);
        }
        let mut now = t0;
        let mut due = Vec::with_capacity(1024);
        b.iter(|| {
            now += Duration::from_millis(1);
            timers.take_due(now, &mut due);
            for (at, key) in due.drain(..) {
                timers.push(at + Duration::from_millis(20), black_box(key));
            }
            black_box(timers.next())
        })
    });
    g.finish();
}

criterion_group!(benches, sip, rtp, call, frame_scheduling);
criterion_main!(benches);
