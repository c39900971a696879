//! One call's RTP stream (RFC 3550), sans-IO: validates what arrives (version, payload
//! type, source after latching — symmetric RTP), and paces what we send on an absolute
//! clock (`epoch + n * ptime`), so there is no drift and a late wake-up is visible.
//! Headers we send are coded by the `rtp` crate; received ones are read by `parse_header`
//! (the crate's reader panics on some extensions); the hot path allocates nothing. Owns the call's
//! RTCP (`media::rtcp`): the reception statistics it reports and its timer.

use crate::media::player::{Fill, Player};
use crate::media::rtcp::{
    looks_like_rtcp, OwnStream, Reception, RtcpBye, RtcpPort, RtcpSession, RtcpSetup, RtcpStats,
};
use crate::sip::sdp::{Codec, Negotiated};
use rtp::header::Header;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use webrtc_util::marshal::{Marshal, MarshalSize};

/// Largest RTP datagram we look at; anything larger is dropped unread.
pub const MAX_RTP_PACKET: usize = 1500;
/// Comfort noise (RFC 3389) payload type, accepted and ignored.
const PT_CN: u8 = 13;
/// If the sender falls this many frames behind its clock it skips ahead instead of
/// bursting (the skip is counted, and timestamps still advance by the skipped audio).
const MAX_CATCH_UP_FRAMES: u64 = 3;

/// Counters for the audit record and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RtpStats {
    pub rx_packets: u64,
    /// Packets dropped: malformed, wrong payload type, wrong source after latching.
    pub rx_ignored: u64,
    /// Of those, packets from other than the latched address (injection, a stale peer).
    pub rx_wrong_source: u64,
    pub tx_packets: u64,
    /// Payload octets sent (the SR's octet count).
    pub tx_octets: u64,
    /// Frames skipped because the sender woke up too late to send them on time.
    pub tx_late_skipped: u64,
    pub rtcp: RtcpStats,
}

/// What an accepted packet carries.
#[derive(Debug, PartialEq, Eq)]
pub enum RtpPayload<'a> {
    /// Audio in the negotiated codec.
    Audio(&'a [u8]),
    /// An RFC 4733 telephone-event payload with its RTP timestamp and marker bit.
    Event {
        payload: &'a [u8],
        timestamp: u32,
        marker: bool,
    },
    /// Comfort noise.
    ComfortNoise,
}

/// Why a packet was ignored.
#[derive(Debug, PartialEq, Eq)]
pub enum RtpReject {
    Malformed,
    WrongPayloadType,
    WrongSource,
    /// From a source not yet learned (on probation; see `PROBATION`).
    Learning,
    NotReceiving,
}

/// What we read of a received RTP header (RFC 3550 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    pub padding: bool,
    pub marker: bool,
    pub payload_type: u8,
    pub sequence_number: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

/// Reads the fixed header and skips the CSRCs and any header extension (checked to fit),
/// returning the payload. Not the `rtp` crate's `Header::unmarshal`: that panics on an RFC
/// 8285 extension element running past the extension (a peer's packet could end the call;
/// found by fuzzing, fuzz/regressions/rtp/) and allocates per packet. We use neither the
/// CSRCs nor the extension elements.
pub fn parse_header(data: &[u8]) -> Option<(RtpHeader, &[u8])> {
    let (head, rest) = data.split_first_chunk::<12>()?;
    let [b0, b1, s0, s1, t0, t1, t2, t3, x0, x1, x2, x3] = *head;
    let csrcs = usize::from(b0 & 0x0f) * 4;
    let rest = rest.get(csrcs..)?;
    let rest = if b0 & 0x10 != 0 {
        let (ext, rest) = rest.split_first_chunk::<4>()?;
        let [_, _, w0, w1] = *ext;
        rest.get(usize::from(u16::from_be_bytes([w0, w1])) * 4..)?
    } else {
        rest
    };
    let h = RtpHeader {
        padding: b0 & 0x20 != 0,
        marker: b1 & 0x80 != 0,
        payload_type: b1 & 0x7f,
        sequence_number: u16::from_be_bytes([s0, s1]),
        timestamp: u32::from_be_bytes([t0, t1, t2, t3]),
        ssrc: u32::from_be_bytes([x0, x1, x2, x3]),
    };
    Some((h, rest))
}

/// In-sequence packets a source other than the SDP address sends before we latch to it
/// (strict RTP's learning; RFC 3550 A.1 probation).
pub const PROBATION: u8 = 4;

/// The RTP session state of one call.
#[derive(Debug)]
pub struct RtpSession {
    neg: Negotiated,
    ssrc: u32,
    seq: u16,
    ts: u32,
    epoch: Instant,
    frames: u64,
    remote: Option<SocketAddr>,
    latched: Option<SocketAddr>,
    /// A source other than the SDP address on its way to being learned (NAT): the address,
    /// its last sequence number and how many in-sequence packets it has sent.
    probation: Option<(SocketAddr, u16, u8)>,
    last_rx: Instant,
    marker: bool,
    stats: RtpStats,
    /// Origin of arrival times in timestamp units (jitter).
    started: Instant,
    rx: Reception,
    rtcp: Option<RtcpSession>,
}

/// The header fields reception statistics need.
struct Seen {
    ssrc: u32,
    seq: u16,
    ts: u32,
}

impl RtpSession {
    /// Starts the session at `now`; `ssrc`, `seq` and `ts` are random initial values.
    pub fn new(now: Instant, neg: Negotiated, ssrc: u32, seq: u16, ts: u32) -> Self {
        RtpSession {
            remote: neg.remote,
            neg,
            ssrc,
            seq,
            ts,
            epoch: now,
            frames: 0,
            latched: None,
            probation: None,
            last_rx: now,
            marker: true,
            stats: RtpStats::default(),
            started: now,
            rx: Reception::default(),
            rtcp: None,
        }
    }

    /// Turns RTCP on (reports, and listening to the peer's).
    pub fn with_rtcp(mut self, now: Instant, setup: RtcpSetup) -> Self {
        self.rtcp = Some(RtcpSession::new(now, setup, &self.neg));
        self
    }

    pub fn stats(&self) -> RtpStats {
        RtpStats {
            rtcp: self.rtcp.as_ref().map(|r| r.stats()).unwrap_or_default(),
            ..self.stats
        }
    }

    pub fn negotiated(&self) -> &Negotiated {
        &self.neg
    }

    /// Where the peer said it sends from (SDP) for RTP, and for RTCP when not muxed: what
    /// a shared media socket tells this call's packets apart by.
    pub fn sdp_sources(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        (self.remote, self.rtcp.as_ref().and_then(|r| r.sdp_remote()))
    }

    /// Where we send to now (latched source, else the SDP address).
    pub fn destination(&self) -> Option<SocketAddr> {
        self.latched.or(self.remote)
    }

    /// A new negotiation (re-INVITE/UPDATE). Keeps SSRC and sequence; restarts the clock
    /// and re-learns the source if the peer moved.
    pub fn renegotiate(&mut self, now: Instant, neg: Negotiated) {
        if neg.remote != self.neg.remote {
            self.latched = None;
            self.probation = None;
        }
        self.remote = neg.remote;
        if neg.ptime_ms != self.neg.ptime_ms || neg.codec != self.neg.codec {
            self.restart_clock(now);
        }
        if !self.neg.direction.we_receive() {
            self.last_rx = now;
        }
        if let Some(r) = &mut self.rtcp {
            r.renegotiate(&neg);
        }
        self.neg = neg;
    }

    fn restart_clock(&mut self, now: Instant) {
        let samples = self.samples_per_frame();
        self.ts = self.ts.wrapping_add(samples * self.frames as u32);
        self.epoch = now;
        self.frames = 0;
        self.marker = true;
    }

    fn ptime(&self) -> Duration {
        Duration::from_millis(self.neg.ptime_ms as u64)
    }

    fn samples_per_frame(&self) -> u32 {
        self.neg.ptime_ms * 8
    }

    /// Time the last valid packet arrived (or the session started / the peer resumed).
    pub fn last_rx(&self) -> Instant {
        self.last_rx
    }

    /// Is the peer expected to send us media?
    pub fn expects_media(&self) -> bool {
        self.neg.direction.we_receive()
    }

    /// Validates one datagram from `src`.
    pub fn handle_packet<'a>(
        &mut self,
        now: Instant,
        src: SocketAddr,
        data: &'a [u8],
    ) -> Result<RtpPayload<'a>, RtpReject> {
        let r = self
            .classify(data)
            .and_then(|(p, seen)| self.admit_source(src, seen.seq).map(|()| (p, seen)));
        match &r {
            Ok((payload, seen)) => {
                let timed = !matches!(payload, RtpPayload::Event { .. });
                // Arrival on the 8 kHz sampling clock (G.711 and telephone-event alike).
                let arrival =
                    (now.saturating_duration_since(self.started).as_micros() as u64 / 125) as u32;
                self.rx
                    .on_packet(seen.ssrc, seen.seq, seen.ts, arrival, timed);
                self.stats.rx_packets += 1;
                self.last_rx = now;
            }
            Err(e) => {
                self.stats.rx_ignored += 1;
                if *e == RtpReject::WrongSource {
                    self.stats.rx_wrong_source += 1;
                }
            }
        }
        r.map(|(p, _)| p)
    }

    /// Whom we take media from (symmetric RTP, RFC 4961, with learning as strict RTP does):
    /// the address in the peer's SDP at once and always — a packet from it moves the latch
    /// back to it; failing that, a source behind NAT once it has sent `PROBATION` packets
    /// in sequence and nothing came from the SDP address first. A stranger that slips one
    /// packet in before the PBX's first no longer takes the call's audio (ours goes where
    /// the latch is), and once latched, no one else is heard.
    fn admit_source(&mut self, src: SocketAddr, seq: u16) -> Result<(), RtpReject> {
        if self.latched == Some(src) {
            return Ok(());
        }
        if self.remote == Some(src) {
            self.latched = Some(src);
            self.probation = None;
            return Ok(());
        }
        if self.latched.is_some() {
            return Err(RtpReject::WrongSource);
        }
        match &mut self.probation {
            Some((a, last, n)) if *a == src && seq == last.wrapping_add(1) => {
                *last = seq;
                *n = n.saturating_add(1);
                if *n >= PROBATION {
                    self.latched = Some(src);
                    self.probation = None;
                    return Ok(());
                }
                Err(RtpReject::Learning)
            }
            _ => {
                self.probation = Some((src, seq, 1));
                Err(RtpReject::Learning)
            }
        }
    }

    fn classify<'a>(&self, data: &'a [u8]) -> Result<(RtpPayload<'a>, Seen), RtpReject> {
        if !self.neg.direction.we_receive() {
            return Err(RtpReject::NotReceiving);
        }
        if data.len() > MAX_RTP_PACKET || data.len() < 12 || data.first().map(|b| b >> 6) != Some(2)
        {
            return Err(RtpReject::Malformed);
        }
        let (h, mut payload) = parse_header(data).ok_or(RtpReject::Malformed)?;
        if h.padding {
            let pad = *payload.last().ok_or(RtpReject::Malformed)? as usize;
            if pad == 0 || pad > payload.len() {
                return Err(RtpReject::Malformed);
            }
            payload = payload
                .get(..payload.len() - pad)
                .ok_or(RtpReject::Malformed)?;
        }
        let p = if h.payload_type == self.neg.pt {
            RtpPayload::Audio(payload)
        } else if Some(h.payload_type) == self.neg.te_pt {
            RtpPayload::Event {
                payload,
                timestamp: h.timestamp,
                marker: h.marker,
            }
        } else if h.payload_type == PT_CN {
            RtpPayload::ComfortNoise
        } else {
            return Err(RtpReject::WrongPayloadType);
        };
        let seen = Seen {
            ssrc: h.ssrc,
            seq: h.sequence_number,
            ts: h.timestamp,
        };
        Ok((p, seen))
    }

    /// An RTCP datagram from `src` that arrived on `via` (the RTP socket only counts with
    /// rtcp-mux).
    pub fn handle_rtcp(&mut self, now: Instant, src: SocketAddr, data: &[u8], via: RtcpPort) {
        if let Some(r) = &mut self.rtcp {
            r.handle(now, src, data, via, self.ssrc);
        }
    }

    /// Is this datagram on the RTP socket RTCP (RFC 5761 §4)? Only asked with mux.
    pub fn is_muxed_rtcp(&self, data: &[u8]) -> bool {
        self.neg.rtcp_mux && looks_like_rtcp(data)
    }

    /// When our next RTCP report is due.
    pub fn poll_rtcp_timeout(&self) -> Option<Instant> {
        self.rtcp.as_ref().map(|r| r.poll_timeout())
    }

    fn own_stream(&self, now: Instant) -> OwnStream {
        // The RTP clock runs between frames too: frame n at `epoch + n·ptime` carries
        // `ts + n·samples`, so `now` is `ts` plus the samples since `epoch`.
        let samples = now.saturating_duration_since(self.epoch).as_micros() / 125;
        OwnStream {
            ssrc: self.ssrc,
            rtp_dest: self.destination(),
            packets: self.stats.tx_packets,
            octets: self.stats.tx_octets,
            rtp_ts: self.ts.wrapping_add(samples as u32),
        }
    }

    /// Writes our next RTCP report into `buf` if one is due: `(len, destination, socket)`.
    pub fn poll_rtcp(
        &mut self,
        now: Instant,
        buf: &mut [u8],
    ) -> Option<(usize, SocketAddr, RtcpPort)> {
        let own = self.own_stream(now);
        self.rtcp
            .as_mut()?
            .poll_transmit(now, buf, &own, &mut self.rx)
    }

    /// The session is ending: our final report with BYE, to send once it is gone.
    pub fn rtcp_bye(&mut self, now: Instant) -> Option<RtcpBye> {
        let own = self.own_stream(now);
        self.rtcp.as_mut()?.bye(now, &own, &mut self.rx)
    }

    /// When the next frame is due, if we are sending.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.neg.direction.we_send() && self.destination().is_some())
            .then(|| self.epoch + self.ptime() * self.frames as u32)
    }

    /// Writes the next due frame, filled by `player` (prompt audio, comfort silence, or
    /// nothing), into `buf`; returns its length and destination. Call until `None` after
    /// each wake-up. A frame the player leaves empty still advances the clock; the next
    /// packet sent then carries the marker bit (a new talk-spurt, RFC 3551 §4.1).
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        player: &mut Player,
    ) -> Option<(usize, SocketAddr)> {
        const HEADER: usize = 12;
        loop {
            let due = self.poll_timeout()?;
            if due > now {
                return None;
            }
            let dest = self.destination()?;
            let ptime = self.ptime();
            let samples = self.samples_per_frame() as usize;
            let behind = (now - due).as_micros() as u64 / ptime.as_micros().max(1) as u64;
            if behind > MAX_CATCH_UP_FRAMES {
                self.frames += behind;
                self.stats.tx_late_skipped += behind;
                player.skip(behind as usize * samples);
            }
            let frame = buf.get_mut(HEADER..HEADER + samples)?;
            let fill = player.fill(self.neg.codec, frame);
            let timestamp = self
                .ts
                .wrapping_add(self.samples_per_frame().wrapping_mul(self.frames as u32));
            self.frames += 1;
            let marker = match fill {
                Fill::Nothing => {
                    self.marker = true;
                    continue;
                }
                Fill::Audio { first } => self.marker || first,
                Fill::Silence => self.marker,
            };
            let header = Header {
                version: 2,
                marker,
                payload_type: self.neg.pt,
                sequence_number: self.seq,
                timestamp,
                ssrc: self.ssrc,
                ..Default::default()
            };
            debug_assert_eq!(header.marshal_size(), HEADER);
            header.marshal_to(buf.get_mut(..HEADER)?).ok()?;
            self.marker = false;
            self.seq = self.seq.wrapping_add(1);
            self.stats.tx_packets += 1;
            self.stats.tx_octets += samples as u64;
            return Some((HEADER + samples, dest));
        }
    }
}

/// The G.711 code for zero amplitude.
pub fn silence_byte(codec: Codec) -> u8 {
    match codec {
        Codec::Pcmu => 0xFF,
        Codec::Pcma => 0xD5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::player::IdleMode;
    use crate::sip::sdp::Direction;
    use webrtc_util::marshal::Unmarshal;

    fn neg() -> Negotiated {
        Negotiated {
            codec: Codec::Pcmu,
            pt: 0,
            te_pt: Some(101),
            ptime_ms: 20,
            remote: Some("192.0.2.1:4000".parse().unwrap()),
            direction: Direction::SendRecv,
            rtcp_mux: false,
            rtcp: Some("192.0.2.1:4001".parse().unwrap()),
        }
    }

    fn pkt(pt: u8, seq: u16, marker: bool) -> Vec<u8> {
        let h = Header {
            version: 2,
            payload_type: pt,
            sequence_number: seq,
            timestamp: 160 * seq as u32,
            ssrc: 7,
            marker,
            ..Default::default()
        };
        let mut v = h.marshal().unwrap().to_vec();
        v.extend_from_slice(&[0xFF; 160]);
        v
    }

    #[test]
    fn frames_on_absolute_clock_without_drift() {
        let t0 = crate::testutil::epoch();
        let mut s = RtpSession::new(t0, neg(), 1234, 65530, u32::MAX - 100);
        let mut buf = [0u8; 1500];
        let mut sent = vec![];
        // Ten minutes of 20 ms frames, waking exactly at each deadline.
        while let Some(at) = s.poll_timeout() {
            if at - t0 >= Duration::from_secs(600) {
                break;
            }
            while let Some((n, dest)) =
                s.poll_transmit(at, &mut buf, &mut Player::new(IdleMode::Silence))
            {
                assert_eq!(dest, "192.0.2.1:4000".parse().unwrap());
                let h = Header::unmarshal(&mut &buf[..n]).unwrap();
                sent.push((at, h.sequence_number, h.timestamp, h.marker, n));
            }
        }
        assert_eq!(sent.len(), 30_000);
        assert_eq!(sent.last().unwrap().0 - t0, Duration::from_millis(599_980));
        assert!(sent[0].3, "marker on first packet");
        assert!(sent[1..].iter().all(|p| !p.3));
        for w in sent.windows(2) {
            assert_eq!(w[1].1, w[0].1.wrapping_add(1));
            assert_eq!(w[1].2, w[0].2.wrapping_add(160));
            assert_eq!(w[1].0 - w[0].0, Duration::from_millis(20));
        }
        assert_eq!(sent[0].4, 12 + 160);
    }

    #[test]
    fn ten_minute_prompt_plays_without_drift_and_resumes_with_marker() {
        use crate::media::player::{PlayItem, Player};
        use crate::media::prompt::Prompt;
        use std::sync::Arc;
        let t0 = crate::testutil::epoch();
        let pcm: Vec<i16> = (0..8000 * 600).map(|i| ((i * 7) % 3000) as i16).collect();
        let prompt = Arc::new(Prompt::from_pcm("long", &pcm));
        let mut player = Player::new(IdleMode::Nothing);
        player.play(vec![PlayItem::new(prompt.clone())]);
        let mut s = RtpSession::new(t0, neg(), 9, 100, 5000);
        let mut buf = [0u8; 1500];
        let mut sent = 0usize;
        let mut last = None;
        while let Some(at) = s.poll_timeout() {
            if at - t0 > Duration::from_secs(602) {
                break;
            }
            while let Some((n, _)) = s.poll_transmit(at, &mut buf, &mut player) {
                let h = Header::unmarshal(&mut &buf[..n]).unwrap();
                assert_eq!(h.marker, sent == 0);
                assert_eq!(h.timestamp, 5000u32.wrapping_add(160 * sent as u32));
                assert_eq!(at, t0 + Duration::from_millis(20 * sent as u64), "no drift");
                let want = &prompt.bytes(Codec::Pcmu)[sent * 160..(sent + 1) * 160];
                assert_eq!(&buf[12..n], want);
                sent += 1;
                last = Some(at);
            }
        }
        assert_eq!(sent, 30_000, "10 minutes of 20 ms frames, then nothing");
        assert_eq!(last, Some(t0 + Duration::from_millis(599_980)));
        // After 2 s of nothing, a new prompt starts a talk-spurt: marker, timestamps that
        // kept counting.
        player.play(vec![PlayItem::new(Arc::new(Prompt::from_pcm(
            "b",
            &[500; 160],
        )))]);
        let at = s.poll_timeout().unwrap();
        let (n, _) = s.poll_transmit(at, &mut buf, &mut player).unwrap();
        let h = Header::unmarshal(&mut &buf[..n]).unwrap();
        assert!(h.marker);
        assert_eq!(h.sequence_number, 100u16.wrapping_add(30_000u16));
        let frames = ((at - t0).as_millis() / 20) as u32;
        assert_eq!(h.timestamp, 5000 + 160 * frames);
    }

    #[test]
    fn late_wakeup_catches_up_or_skips_counted() {
        let t0 = crate::testutil::epoch();
        let mut s = RtpSession::new(t0, neg(), 1, 0, 0);
        let mut buf = [0u8; 1500];
        // 50 ms late: frames for 0, 20, 40 ms all go now.
        let mut n = 0;
        while s
            .poll_transmit(
                t0 + Duration::from_millis(50),
                &mut buf,
                &mut Player::default(),
            )
            .is_some()
        {
            n += 1;
        }
        assert_eq!(n, 3);
        // 1 s late: skip ahead, count it, keep timestamps true to the clock.
        let late = t0 + Duration::from_millis(1060);
        let (len, _) = s
            .poll_transmit(late, &mut buf, &mut Player::default())
            .unwrap();
        let h = Header::unmarshal(&mut &buf[..len]).unwrap();
        assert!(s.stats().tx_late_skipped > 40);
        assert_eq!(h.timestamp, 160 * (3 + s.stats().tx_late_skipped as u32));
        assert_eq!(h.sequence_number, 3, "sequence stays contiguous");
    }

    #[test]
    fn symmetric_rtp_learns_a_nat_source_after_probation() {
        let t0 = crate::testutil::epoch();
        let mut s = RtpSession::new(t0, neg(), 1, 0, 0);
        let nat: SocketAddr = "198.51.100.7:31000".parse().unwrap();
        let other: SocketAddr = "203.0.113.9:5000".parse().unwrap();
        // Nothing from the SDP address: the NAT source is learned on its 4th packet in a
        // row; the ones before are dropped.
        for seq in 1..PROBATION as u16 {
            assert_eq!(
                s.handle_packet(t0, nat, &pkt(0, seq, seq == 1)),
                Err(RtpReject::Learning)
            );
            assert_eq!(s.destination(), "192.0.2.1:4000".parse().ok());
        }
        assert_eq!(
            s.handle_packet(t0, nat, &pkt(0, 4, false)),
            Ok(RtpPayload::Audio(&[0xFF; 160][..]))
        );
        assert_eq!(s.destination(), Some(nat));
        assert_eq!(
            s.handle_packet(t0, other, &pkt(0, 5, false)),
            Err(RtpReject::WrongSource)
        );
        assert!(matches!(
            s.handle_packet(t0, nat, &pkt(101, 6, true)),
            Ok(RtpPayload::Event { marker: true, .. })
        ));
        assert_eq!(
            s.handle_packet(t0, nat, &pkt(18, 7, false)),
            Err(RtpReject::WrongPayloadType)
        );
        assert_eq!(s.stats().rx_packets, 2);
        // Another port on the latched host is another source too.
        let moved: SocketAddr = "198.51.100.7:31002".parse().unwrap();
        for seq in 8..20 {
            assert_eq!(
                s.handle_packet(t0, moved, &pkt(0, seq, false)),
                Err(RtpReject::WrongSource)
            );
        }
        assert_eq!(
            s.destination(),
            Some(nat),
            "a stranger never moves the latch, however many packets"
        );
        // The SDP address always wins.
        let sdp: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        assert!(s.handle_packet(t0, sdp, &pkt(0, 30, false)).is_ok());
        assert_eq!(s.destination(), Some(sdp));
        assert_eq!(
            s.handle_packet(t0, nat, &pkt(0, 31, false)),
            Err(RtpReject::WrongSource)
        );
    }

    #[test]
    fn a_stranger_first_does_not_take_the_call_from_the_sdp_address() {
        let t0 = crate::testutil::epoch();
        let mut s = RtpSession::new(t0, neg(), 1, 0, 0);
        let sdp: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let stranger: SocketAddr = "203.0.113.9:5000".parse().unwrap();
        // A few packets from a stranger before the PBX's first: not learned yet...
        for seq in 100..103 {
            assert_eq!(
                s.handle_packet(t0, stranger, &pkt(101, seq, false)),
                Err(RtpReject::Learning)
            );
        }
        assert_eq!(
            s.destination(),
            Some(sdp),
            "our audio still goes to the PBX"
        );
        // ...and the PBX's first packet latches the SDP address for good.
        assert!(s.handle_packet(t0, sdp, &pkt(0, 1, true)).is_ok());
        for seq in 103..120 {
            assert_eq!(
                s.handle_packet(t0, stranger, &pkt(101, seq, false)),
                Err(RtpReject::WrongSource)
            );
        }
        assert_eq!(s.destination(), Some(sdp));
        assert_eq!(s.stats().rx_packets, 1);
        assert_eq!(s.stats().rx_wrong_source, 17);
        assert_eq!(s.stats().rx_ignored, 20);
    }

    #[test]
    fn an_extension_element_past_its_extension_is_no_panic() {
        // Fuzzing found it: the rtp crate's Header::unmarshal panicked ("advance out of
        // bounds") on an RFC 8285 two-byte-header element (profile 0x1000) whose length
        // runs past the extension block, so one packet from anyone could end a call.
        let t0 = crate::testutil::epoch();
        let mut s = RtpSession::new(t0, neg(), 1, 0, 0);
        let src: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let mut p = vec![0x90, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0, 7];
        // Extension: profile 0x1000, one word: element id 1, length 255 (past the end).
        p.extend_from_slice(&[0x10, 0x00, 0x00, 0x01, 0x01, 0xff, 0xaa, 0xbb]);
        p.extend_from_slice(&[0xFF; 160]);
        assert_eq!(
            s.handle_packet(t0, src, &p),
            Ok(RtpPayload::Audio(&[0xFF; 160][..])),
            "the extension is skipped whole; its elements are none of our business"
        );
        // An extension longer than the packet, or CSRCs past the end: malformed.
        let mut long = p.clone();
        long[15] = 0xff;
        assert_eq!(s.handle_packet(t0, src, &long), Err(RtpReject::Malformed));
        let mut csrc = p[..20].to_vec();
        csrc[0] = 0x8f;
        assert_eq!(s.handle_packet(t0, src, &csrc), Err(RtpReject::Malformed));
        // The fuzzer's own input, replayed as it was found.
        crate::fuzzing::rtp(
            t0,
            include_bytes!(
                "../../fuzz/regressions/rtp/crash-326a082580ab418ae8e64554fe715df87e381e11"
            ),
        );
    }

    #[test]
    fn garbage_is_ignored_not_crashed_on() {
        let t0 = crate::testutil::epoch();
        let mut s = RtpSession::new(t0, neg(), 1, 0, 0);
        let src: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let mut cases: Vec<Vec<u8>> = vec![vec![], vec![0x80], vec![0; 12], vec![0xFF; 3000]];
        // CSRC count claims more than present; extension header truncated; bad padding.
        let mut p = pkt(0, 1, false);
        p[0] |= 0x0F;
        p.truncate(20);
        cases.push(p);
        let mut p = pkt(0, 1, false);
        p[0] |= 0x10;
        p.truncate(14);
        cases.push(p);
        let mut p = pkt(0, 1, false);
        p[0] |= 0x20;
        *p.last_mut().unwrap() = 250;
        cases.push(p);
        for c in &cases {
            assert!(s.handle_packet(t0, src, c).is_err(), "{c:?}");
        }
        assert_eq!(s.destination(), Some(src), "garbage never latches");
        assert_eq!(s.stats().rx_packets, 0);
    }

    #[test]
    fn hold_stops_sending_and_receiving_expectation() {
        let t0 = crate::testutil::epoch();
        let mut s = RtpSession::new(t0, neg(), 1, 0, 0);
        let mut n = neg();
        n.direction = Direction::Inactive;
        s.renegotiate(t0, n);
        assert_eq!(s.poll_timeout(), None);
        assert!(!s.expects_media());
        n.direction = Direction::SendRecv;
        n.ptime_ms = 30;
        s.renegotiate(t0 + Duration::from_secs(5), n);
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(5)));
    }
}
