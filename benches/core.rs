//! Hot paths of the sans-IO core: SIP parse, endpoint routing, and the per-packet RTP work
//! (validate one inbound packet, write one outbound frame). Run: `cargo bench --bench core`.
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

criterion_group!(benches, sip, rtp);
criterion_main!(benches);
