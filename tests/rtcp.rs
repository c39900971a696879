//! Black-box: RTCP of the real binary, on the RTP port + 1 (no rtcp-mux offered). Our
//! reports reach the PBX's RTP port + 1 from ours; the PBX's own report is taken (its SR
//! comes back as the LSR of our block about its stream, and the end-of-call line counts
//! it); the call's end is announced with an RTCP BYE.

// Black-box tests are a driver: they may read the clock.
#![allow(clippy::disallowed_methods)]

mod common;

use common::raw_pbx::{rtp_rtcp_pair, RawPbx};
use common::*;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

const PBX_SSRC: u32 = 0x5050_5050;
/// The PBX's SR NTP timestamp; its middle 32 bits come back as our LSR.
const PBX_NTP: u64 = 0xE123_4567_89AB_CDEF;

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// The PBX's compound report: SR (no blocks) + SDES CNAME "pbx".
fn pbx_sr() -> Vec<u8> {
    let mut v = vec![0x80, 200, 0, 6];
    v.extend_from_slice(&PBX_SSRC.to_be_bytes());
    v.extend_from_slice(&PBX_NTP.to_be_bytes());
    v.extend_from_slice(&[0, 0, 0, 160, 0, 0, 0, 1, 0, 0, 0, 160]);
    v.extend_from_slice(&[0x81, 202, 0, 3]);
    v.extend_from_slice(&PBX_SSRC.to_be_bytes());
    v.extend_from_slice(&[1, 3, b'p', b'b', b'x', 0, 0, 0]);
    v
}

/// The packet types of a compound, walking its length fields.
fn types(b: &[u8]) -> Vec<u8> {
    let mut out = vec![];
    let mut at = 0;
    while at + 4 <= b.len() {
        assert_eq!(b[at] >> 6, 2, "version 2: {b:?}");
        out.push(b[at + 1]);
        at += (u16::from_be_bytes([b[at + 2], b[at + 3]]) as usize + 1) * 4;
    }
    assert_eq!(at, b.len(), "lengths add up: {b:?}");
    out
}

/// The RTCP datagrams that arrive on `sock` within `wait`, with their sources.
fn collect(
    sock: &UdpSocket,
    wait: Duration,
    until: impl Fn(&[u8]) -> bool,
) -> Vec<(SocketAddr, Vec<u8>)> {
    let end = Instant::now() + wait;
    let mut got = vec![];
    let mut buf = [0u8; 1500];
    while Instant::now() < end {
        if let Ok((n, src)) = sock.recv_from(&mut buf) {
            got.push((src, buf[..n].to_vec()));
            if until(&buf[..n]) {
                break;
            }
        }
    }
    got
}

#[test]
fn rtcp_between_rtp_port_plus_one_pairs_both_ways_and_bye_at_the_end() {
    let svc = Service::start("", "");
    let (rtp, rtcp) = rtp_rtcp_pair();
    rtcp.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    rtp.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut pbx = RawPbx::with_rtp(svc.udp, "rtcp-black-box-1", rtp);
    let ok = pbx.call("+15551234567");
    assert!(!ok.body().contains("rtcp-mux"), "not offered, not answered");
    let our_rtp: u16 = ok
        .body()
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .expect("m=audio port in our answer");
    let our_rtp = SocketAddr::from(([127, 0, 0, 1], our_rtp));
    let our_rtcp = SocketAddr::from(([127, 0, 0, 1], our_rtp.port() + 1));
    // Our SSRC, from our RTP.
    let mut buf = [0u8; 1500];
    let (n, _) = pbx.rtp.recv_from(&mut buf).expect("our RTP");
    assert!(n >= 12);
    let our_ssrc = be32(&buf, 8);
    // The PBX reports first, then sends a second of PCMU so we have its stream to report on.
    rtcp.send_to(&pbx_sr(), our_rtcp).unwrap();
    for seq in 0u16..50 {
        let mut p = vec![0x80, 0];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(160 * u32::from(seq)).to_be_bytes());
        p.extend_from_slice(&PBX_SSRC.to_be_bytes());
        p.extend_from_slice(&[0xFF; 160]);
        pbx.rtp.send_to(&p, our_rtp).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    // Reports come every 2.5–7.5 s (the first sooner): wait for one that echoes our SR.
    let lsr = (PBX_NTP >> 16) as u32;
    let echoed = |b: &[u8]| b.len() >= 52 && b[1] == 200 && b[0] & 0x1F >= 1 && be32(b, 44) == lsr;
    let got = collect(&rtcp, Duration::from_secs(12), echoed);
    assert!(!got.is_empty(), "no RTCP at the PBX's RTP port + 1");
    for (src, b) in &got {
        assert_eq!(*src, our_rtcp, "from our RTP port + 1");
        let t = types(b);
        assert_eq!(t[0], 200, "SR: we send audio");
        assert!(t.contains(&202), "SDES CNAME in every report: {t:?}");
        assert_eq!(be32(b, 4), our_ssrc, "the SSRC of our RTP");
    }
    let (_, last) = got.last().unwrap();
    assert!(echoed(last), "our block never echoed the PBX's SR: {got:?}");
    assert_eq!(
        be32(last, 28),
        PBX_SSRC,
        "the block is about the PBX's stream"
    );
    // The PBX hangs up; our last RTCP is a BYE.
    let to = ok.header("To").unwrap();
    let p = pbx.sip.local_addr().unwrap().port();
    pbx.send(&format!(
        "BYE sip:pincoderouting@{t} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bK-bye-rtcp;rport\r\n\
From: <sip:+15551234567@127.0.0.1>;tag=pbx1\r\nTo: {to}\r\nCall-ID: rtcp-black-box-1\r\nCSeq: 2 BYE\r\n\
Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        t = svc.udp
    ));
    let got = collect(&rtcp, Duration::from_secs(3), |b| types(b).contains(&203));
    let (src, bye) = got.last().expect("an RTCP BYE");
    assert_eq!(*src, our_rtcp);
    assert_eq!(types(bye).last(), Some(&203), "{bye:?}");
    let log = svc.wait_for(Duration::from_secs(5), |l| {
        l.iter().any(|e| msg(e) == "call ended")
    });
    let ended = log.iter().find(|e| msg(e) == "call ended").unwrap();
    assert!(num(ended, "rtcp_rx") >= 1, "our RTCP counters: {ended}");
    assert!(num(ended, "rtcp_tx") >= 1, "{ended}");
}
