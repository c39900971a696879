//! RTCP for one call (RFC 3550 §6), sans-IO, as a companion of `RtpSession`: takes the
//! peer's compound reports (its SR gives the LSR/DLSR of our report block, its blocks about
//! us our round-trip time and loss, its BYE is counted), and sends ours: an SR while we send
//! audio (else an RR) with one block about the peer's stream and an SDES CNAME, every 5 s
//! randomized to 0.5–1.5× (§6.2, §6.3.1; the first after half that), and a final report with
//! a BYE when the call ends (§6.6). RTCP goes on the RTP port + 1, or on the RTP port itself
//! when `a=rtcp-mux` was negotiated (RFC 5761). Time and the RNG seed are handed in; NTP
//! timestamps come from a wall-clock reading the driver takes once at call set-up.
//!
//! The wire format (`wire`) and the A.1/A.8 reception statistics (`reception`) are hand
//! written rather than taken from the `rtcp` crate: we need four packet types, want the
//! compound checked whole (A.2: padding only last, SR/RR first) before anything is used, and
//! want no boxed trait objects or allocations per packet.

mod reception;
pub mod wire;

pub use reception::Reception;
pub use wire::{looks_like_rtcp, ReportBlock, SenderInfo, MAX_RTCP_PACKET};

use crate::sip::sdp::Negotiated;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use wire::Packet;

/// RFC 3550 §6.2: the minimum (and, at our bandwidth, the actual) report interval.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(5);
/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// Largest compound we write (final SR + block + SDES + BYE is 88 bytes).
const MAX_OWN_REPORT: usize = 128;

/// A wall-clock reading: at `at`, the time was `since_unix` after 1970-01-01 UTC. The driver
/// reads both clocks once per call; the core derives every NTP timestamp from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallClock {
    pub at: Instant,
    pub since_unix: Duration,
}

impl WallClock {
    /// The 64-bit NTP timestamp (§4) of `now`.
    pub fn ntp(&self, now: Instant) -> u64 {
        let t = if now >= self.at {
            self.since_unix + (now - self.at)
        } else {
            self.since_unix.saturating_sub(self.at - now)
        };
        let secs = t.as_secs().wrapping_add(NTP_UNIX_OFFSET);
        let frac = (u64::from(t.subsec_nanos()) << 32) / 1_000_000_000;
        (secs << 32) | frac
    }
}

/// The middle 32 bits of an NTP timestamp (LSR, §6.4.1).
fn mid32(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// Which of the call's sockets an RTCP packet uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcpPort {
    /// The RTP socket (rtcp-mux, RFC 5761).
    Rtp,
    /// The RTCP socket, RTP port + 1.
    Rtcp,
}

/// What RTCP needs at set-up besides the negotiation.
#[derive(Debug, Clone, Copy)]
pub struct RtcpSetup {
    /// Seeds the interval randomization and the CNAME.
    pub seed: u64,
    pub wall_clock: WallClock,
}

/// RTCP counters for the audit record and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RtcpStats {
    /// Valid compound packets received.
    pub rx: u64,
    /// Datagrams dropped: malformed, from the wrong source, on the RTP port without mux.
    pub rx_ignored: u64,
    /// Compound packets we sent.
    pub tx: u64,
    /// BYE packets the peer sent.
    pub bye_rx: u64,
    /// The last round-trip time the peer's reports let us measure.
    pub rtt_ms: Option<u32>,
    /// What the peer last reported as lost of our stream.
    pub peer_reported_lost: Option<i32>,
}

/// A final report with BYE, built when the call ends (when its RTP session is dropped) and
/// sent by the next drain.
#[derive(Debug, Clone)]
pub struct RtcpBye {
    data: [u8; MAX_OWN_REPORT],
    len: usize,
    pub dest: SocketAddr,
    pub port: RtcpPort,
}

impl RtcpBye {
    pub fn bytes(&self) -> &[u8] {
        self.data.get(..self.len).unwrap_or_default()
    }
}

/// What our own RTP stream looks like at report time.
#[derive(Debug, Clone, Copy)]
pub struct OwnStream {
    pub ssrc: u32,
    /// Where RTP goes now (latched or from SDP).
    pub rtp_dest: Option<SocketAddr>,
    /// Packets and payload octets sent so far.
    pub packets: u64,
    pub octets: u64,
    /// The RTP timestamp that corresponds to `now`.
    pub rtp_ts: u32,
}

/// The RTCP state of one call.
#[derive(Debug)]
pub struct RtcpSession {
    rng: SmallRng,
    cname: [u8; 16],
    wall: WallClock,
    next: Instant,
    mux: bool,
    /// The peer's RTCP address from SDP (`a=rtcp:` or RTP port + 1), without mux.
    remote: Option<SocketAddr>,
    /// The first valid source; only it is listened to afterwards.
    latched: Option<SocketAddr>,
    /// Middle 32 bits of the peer's last SR, and when it arrived.
    last_sr: Option<(u32, Instant)>,
    /// Our packets sent at the previous two reports (SR while we sent since, §6.4).
    sent_at: [u64; 2],
    stats: RtcpStats,
}

impl RtcpSession {
    /// The peer's RTCP address from SDP, when RTCP has its own port (not rtcp-mux).
    pub fn sdp_remote(&self) -> Option<SocketAddr> {
        if self.mux {
            None
        } else {
            self.remote
        }
    }

    pub fn new(now: Instant, setup: RtcpSetup, neg: &Negotiated) -> RtcpSession {
        let mut rng = SmallRng::seed_from_u64(setup.seed);
        // RFC 7022: a random per-session CNAME (64 bits, hex).
        let mut cname = [0u8; 16];
        let id: u64 = rng.gen();
        for (i, c) in cname.iter_mut().enumerate() {
            let nibble = ((id >> (60 - 4 * i)) & 0xF) as u8;
            *c = if nibble < 10 {
                b'0' + nibble
            } else {
                b'a' + nibble - 10
            };
        }
        let mut s = RtcpSession {
            rng,
            cname,
            wall: setup.wall_clock,
            next: now,
            mux: neg.rtcp_mux,
            remote: neg.rtcp,
            latched: None,
            last_sr: None,
            sent_at: [0; 2],
            stats: RtcpStats::default(),
        };
        // §6.2: the first report may go after half the minimum interval.
        s.next = now + s.interval(REPORT_INTERVAL / 2);
        s
    }

    /// `base` × a uniform factor in [0.5, 1.5] (§6.3.1). Timer reconsideration (and its
    /// e−3/2 compensation) is for large sessions; a call has two members.
    fn interval(&mut self, base: Duration) -> Duration {
        let us = base.as_micros() as u64;
        Duration::from_micros(self.rng.gen_range(us / 2..=us + us / 2))
    }

    pub fn stats(&self) -> RtcpStats {
        self.stats
    }

    /// A new negotiation: mux and the peer's address may change; a moved peer is re-learnt.
    pub fn renegotiate(&mut self, neg: &Negotiated) {
        if neg.rtcp != self.remote || neg.rtcp_mux != self.mux {
            self.latched = None;
        }
        self.mux = neg.rtcp_mux;
        self.remote = neg.rtcp;
    }

    /// When the next report is due.
    pub fn poll_timeout(&self) -> Instant {
        self.next
    }

    /// Where our reports go and from which socket: the RTP destination with mux, else the
    /// peer's RTCP source once heard (symmetric, for NAT) or its SDP RTCP address.
    pub fn destination(&self, rtp_dest: Option<SocketAddr>) -> Option<(SocketAddr, RtcpPort)> {
        if self.mux {
            rtp_dest.map(|d| (d, RtcpPort::Rtp))
        } else {
            self.latched.or(self.remote).map(|d| (d, RtcpPort::Rtcp))
        }
    }

    /// A datagram that arrived on `via` from `src`, sent by the peer whose stream we report
    /// on; `our_ssrc` picks the peer's block about us.
    pub fn handle(
        &mut self,
        now: Instant,
        src: SocketAddr,
        data: &[u8],
        via: RtcpPort,
        our_ssrc: u32,
    ) {
        let wrong_port = via == RtcpPort::Rtp && !self.mux;
        let wrong_source = self.latched.is_some_and(|l| l != src);
        let Ok(compound) = wire::parse(data) else {
            self.stats.rx_ignored += 1;
            return;
        };
        if wrong_port || wrong_source {
            self.stats.rx_ignored += 1;
            return;
        }
        self.latched = Some(src);
        self.stats.rx += 1;
        for p in compound.packets() {
            let blocks = match p {
                Packet::SenderReport { info, blocks, .. } => {
                    self.last_sr = Some((mid32(info.ntp), now));
                    Some(blocks)
                }
                Packet::ReceiverReport { blocks, .. } => Some(blocks),
                Packet::Bye { .. } => {
                    self.stats.bye_rx += 1;
                    None
                }
                Packet::Sdes { .. } | Packet::Other { .. } => None,
            };
            for b in blocks.iter().flat_map(|b| b.iter()) {
                if b.ssrc == our_ssrc {
                    self.about_us(now, &b);
                }
            }
        }
    }

    /// The peer's report about our stream: loss, and RTT = A − LSR − DLSR (§6.4.1).
    fn about_us(&mut self, now: Instant, b: &ReportBlock) {
        self.stats.peer_reported_lost = Some(b.cumulative_lost);
        if b.lsr == 0 {
            return;
        }
        let a = mid32(self.wall.ntp(now));
        let rtt = a.wrapping_sub(b.lsr).wrapping_sub(b.dlsr);
        // A negative result means the peer's numbers are off; keep the last good one.
        if (rtt as i32) >= 0 {
            self.stats.rtt_ms = Some((u64::from(rtt) * 1000 / 65536) as u32);
        }
    }

    /// LSR and DLSR for our block about the peer (§6.4.1); zeros before its first SR.
    fn lsr_dlsr(&self, now: Instant) -> (u32, u32) {
        match self.last_sr {
            Some((lsr, at)) => {
                let us = now.saturating_duration_since(at).as_micros() as u64;
                (
                    lsr,
                    (us * 65536 / 1_000_000).min(u64::from(u32::MAX)) as u32,
                )
            }
            None => (0, 0),
        }
    }

    /// Writes our compound report for `now` into `buf` if one is due; moves the timer on.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        own: &OwnStream,
        rx: &mut Reception,
    ) -> Option<(usize, SocketAddr, RtcpPort)> {
        if now < self.next {
            return None;
        }
        self.next = now + self.interval(REPORT_INTERVAL);
        // No address for the peer (on hold with c=0.0.0.0): nothing to send this time.
        let (dest, port) = self.destination(own.rtp_dest)?;
        let n = self.write(now, buf, own, rx, false)?;
        Some((n, dest, port))
    }

    /// The final report with BYE (§6.6), ready to send after the session is gone.
    pub fn bye(&mut self, now: Instant, own: &OwnStream, rx: &mut Reception) -> Option<RtcpBye> {
        let (dest, port) = self.destination(own.rtp_dest)?;
        let mut data = [0u8; MAX_OWN_REPORT];
        let len = self.write(now, &mut data, own, rx, true)?;
        Some(RtcpBye {
            data,
            len,
            dest,
            port,
        })
    }

    fn write(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        own: &OwnStream,
        rx: &mut Reception,
        bye: bool,
    ) -> Option<usize> {
        let [before_last, last] = self.sent_at;
        let sender = (own.packets > before_last).then(|| SenderInfo {
            ntp: self.wall.ntp(now),
            rtp_ts: own.rtp_ts,
            packets: own.packets as u32,
            octets: own.octets as u32,
        });
        self.sent_at = [last, own.packets];
        let (lsr, dlsr) = self.lsr_dlsr(now);
        let report = wire::Report {
            ssrc: own.ssrc,
            sender,
            block: rx.report(lsr, dlsr),
            cname: &self.cname,
            bye,
        };
        let n = wire::write(&report, buf)?;
        self.stats.tx += 1;
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::sdp::{Codec, Direction};

    fn neg(mux: bool) -> Negotiated {
        let remote: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        Negotiated {
            codec: Codec::Pcmu,
            pt: 0,
            te_pt: Some(101),
            ptime_ms: 20,
            remote: Some(remote),
            direction: Direction::SendRecv,
            rtcp_mux: mux,
            rtcp: Some(if mux {
                remote
            } else {
                "192.0.2.1:4001".parse().unwrap()
            }),
        }
    }

    fn wall(t0: Instant) -> WallClock {
        // 2024-01-01T00:00:00.5Z
        WallClock {
            at: t0,
            since_unix: Duration::from_millis(1_704_067_200_500),
        }
    }

    fn own(packets: u64) -> OwnStream {
        OwnStream {
            ssrc: 0xAAAA,
            rtp_dest: Some("192.0.2.1:4000".parse().unwrap()),
            packets,
            octets: packets * 160,
            rtp_ts: 1234,
        }
    }

    #[test]
    fn ntp_from_the_wall_clock() {
        let t0 = crate::testutil::epoch();
        let w = wall(t0);
        let ntp = w.ntp(t0 + Duration::from_millis(250));
        assert_eq!(ntp >> 32, 1_704_067_200 + NTP_UNIX_OFFSET);
        assert_eq!(ntp as u32, 0xC000_0000, "0.75 s");
        assert_eq!(w.ntp(t0) as u32, 0x8000_0000);
    }

    #[test]
    fn interval_is_randomized_within_half_and_one_and_a_half_seeded() {
        let t0 = crate::testutil::epoch();
        let run = |seed| {
            let mut s = RtcpSession::new(
                t0,
                RtcpSetup {
                    seed,
                    wall_clock: wall(t0),
                },
                &neg(false),
            );
            let mut rx = Reception::default();
            let mut buf = [0u8; 200];
            let mut at = vec![s.poll_timeout()];
            for _ in 0..400 {
                let now = s.poll_timeout();
                assert!(s.poll_transmit(now, &mut buf, &own(1), &mut rx).is_some());
                assert!(s.poll_transmit(now, &mut buf, &own(1), &mut rx).is_none());
                at.push(s.poll_timeout());
            }
            at
        };
        let a = run(1);
        assert_eq!(a, run(1), "same seed, same schedule");
        assert_ne!(a, run(2));
        let first = a[0] - t0;
        assert!(first >= Duration::from_millis(1250) && first <= Duration::from_millis(3750));
        let gaps: Vec<Duration> = a.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps
            .iter()
            .all(|g| *g >= Duration::from_millis(2500) && *g <= Duration::from_millis(7500)));
        // Spread over the range, averaging 5 s.
        let mean = gaps.iter().sum::<Duration>() / gaps.len() as u32;
        assert!(mean > Duration::from_millis(4700) && mean < Duration::from_millis(5300));
        assert!(gaps.iter().any(|g| *g < Duration::from_millis(3000)));
        assert!(gaps.iter().any(|g| *g > Duration::from_millis(7000)));
    }

    #[test]
    fn report_fields_sr_while_sending_then_rr() {
        let t0 = crate::testutil::epoch();
        let setup = RtcpSetup {
            seed: 3,
            wall_clock: wall(t0),
        };
        let mut s = RtcpSession::new(t0, setup, &neg(false));
        let mut rx = Reception::default();
        for seq in 0..50u16 {
            if seq != 10 {
                rx.on_packet(
                    0xBBBB,
                    seq,
                    160 * u32::from(seq),
                    160 * u32::from(seq),
                    true,
                );
            }
        }
        // The peer's SR at t0 + 1 s (NTP of its own; we echo the middle bits).
        let mut sr = vec![0x80, 200, 0, 6];
        sr.extend_from_slice(&0xBBBBu32.to_be_bytes());
        sr.extend_from_slice(&[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
        sr.extend_from_slice(&[0; 12]);
        let peer: SocketAddr = "192.0.2.1:4001".parse().unwrap();
        s.handle(
            t0 + Duration::from_secs(1),
            peer,
            &sr,
            RtcpPort::Rtcp,
            0xAAAA,
        );
        assert_eq!(s.stats().rx, 1);
        let now = s.poll_timeout().max(t0 + Duration::from_millis(1500));
        let mut buf = [0u8; 200];
        let (n, dest, port) = s.poll_transmit(now, &mut buf, &own(75), &mut rx).unwrap();
        assert_eq!((dest, port), (peer, RtcpPort::Rtcp));
        let c = wire::parse(&buf[..n]).unwrap();
        let p: Vec<Packet> = c.packets().collect();
        let Packet::SenderReport { ssrc, info, blocks } = p[0] else {
            panic!("{p:?}")
        };
        assert_eq!(ssrc, 0xAAAA);
        assert_eq!(
            (info.packets, info.octets, info.rtp_ts),
            (75, 75 * 160, 1234)
        );
        assert_eq!(info.ntp, wall(t0).ntp(now));
        let b = blocks.iter().next().unwrap();
        assert_eq!(b.ssrc, 0xBBBB);
        assert_eq!((b.cumulative_lost, b.ext_highest_seq), (1, 49));
        assert_eq!(b.fraction_lost, (256 / 50) as u8);
        assert_eq!(b.lsr, 0x3344_5566);
        let since_sr = (now - t0 - Duration::from_secs(1)).as_micros() as u64;
        assert_eq!(u64::from(b.dlsr), since_sr * 65536 / 1_000_000);
        let Packet::Sdes {
            cname: Some((0xAAAA, cname)),
            ..
        } = p[1]
        else {
            panic!("{p:?}")
        };
        assert_eq!(cname.len(), 16);
        assert!(cname.iter().all(u8::is_ascii_hexdigit));
        // No more audio sent: SR once more (sent since the report before last), then RR.
        let now = s.poll_timeout();
        let (n, ..) = s.poll_transmit(now, &mut buf, &own(75), &mut rx).unwrap();
        assert!(matches!(
            wire::parse(&buf[..n]).unwrap().packets().next(),
            Some(Packet::SenderReport { .. })
        ));
        let now = s.poll_timeout();
        let (n, ..) = s.poll_transmit(now, &mut buf, &own(75), &mut rx).unwrap();
        assert!(matches!(
            wire::parse(&buf[..n]).unwrap().packets().next(),
            Some(Packet::ReceiverReport { .. })
        ));
        assert_eq!(s.stats().tx, 3);
    }

    #[test]
    fn peer_reports_give_rtt_loss_and_bye_and_strangers_are_ignored() {
        let t0 = crate::testutil::epoch();
        let w = wall(t0);
        let setup = RtcpSetup {
            seed: 4,
            wall_clock: w,
        };
        let mut s = RtcpSession::new(t0, setup, &neg(false));
        let peer: SocketAddr = "198.51.100.7:31001".parse().unwrap();
        // The peer got our SR (LSR = its middle bits) 300 ms ago, held it 100 ms: RTT 200 ms.
        let now = t0 + Duration::from_secs(10);
        let lsr = mid32(w.ntp(now - Duration::from_millis(300)));
        let rr = |ssrc: u32, bye: bool| {
            let block = ReportBlock {
                ssrc,
                cumulative_lost: 4,
                lsr,
                dlsr: 65536 / 10,
                ..Default::default()
            };
            let r = wire::Report {
                ssrc: 0xBBBB,
                sender: None,
                block: Some(block),
                cname: b"pbx",
                bye,
            };
            let mut buf = [0u8; 200];
            let n = wire::write(&r, &mut buf).unwrap();
            buf[..n].to_vec()
        };
        // Not about us: nothing learnt, still counted as received.
        s.handle(now, peer, &rr(0x1234, false), RtcpPort::Rtcp, 0xAAAA);
        assert_eq!(s.stats().rtt_ms, None);
        s.handle(now, peer, &rr(0xAAAA, false), RtcpPort::Rtcp, 0xAAAA);
        let rtt = s.stats().rtt_ms.unwrap();
        assert!((199..=201).contains(&rtt), "{rtt}");
        assert_eq!(s.stats().peer_reported_lost, Some(4));
        // Symmetric RTCP: we answer where it came from, not the SDP address.
        assert_eq!(s.destination(None), Some((peer, RtcpPort::Rtcp)));
        // Another source, the RTP port without mux, garbage: ignored.
        let other: SocketAddr = "203.0.113.1:4001".parse().unwrap();
        s.handle(now, other, &rr(0xAAAA, false), RtcpPort::Rtcp, 0xAAAA);
        s.handle(now, peer, &rr(0xAAAA, false), RtcpPort::Rtp, 0xAAAA);
        s.handle(now, peer, &[0x80, 200, 0, 0], RtcpPort::Rtcp, 0xAAAA);
        assert_eq!(s.stats().rx_ignored, 3);
        assert_eq!(s.stats().rx, 2);
        s.handle(now, peer, &rr(0xAAAA, true), RtcpPort::Rtcp, 0xAAAA);
        assert_eq!(s.stats().bye_rx, 1);
    }

    #[test]
    fn mux_sends_and_listens_on_the_rtp_port() {
        let t0 = crate::testutil::epoch();
        let setup = RtcpSetup {
            seed: 5,
            wall_clock: wall(t0),
        };
        let mut s = RtcpSession::new(t0, setup, &neg(true));
        let nat: SocketAddr = "198.51.100.7:31000".parse().unwrap();
        let mut rx = Reception::default();
        let mut buf = [0u8; 200];
        let mut o = own(0);
        o.rtp_dest = Some(nat);
        let (_, dest, port) = s
            .poll_transmit(s.poll_timeout(), &mut buf, &o, &mut rx)
            .unwrap();
        assert_eq!((dest, port), (nat, RtcpPort::Rtp));
        let (n, ..) = s
            .poll_transmit(s.poll_timeout(), &mut buf, &o, &mut rx)
            .unwrap();
        s.handle(t0, nat, &buf[..n], RtcpPort::Rtp, 0xAAAA);
        assert_eq!(s.stats().rx, 1);
        // The final report ends with our BYE.
        let bye = s.bye(t0, &o, &mut rx).unwrap();
        assert_eq!((bye.dest, bye.port), (nat, RtcpPort::Rtp));
        let last = wire::parse(bye.bytes()).unwrap().packets().last().unwrap();
        assert!(matches!(last, Packet::Bye { .. }));
    }
}
