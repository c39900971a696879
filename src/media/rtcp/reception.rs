//! What we know about the peer's RTP stream, for our report block: sequence accounting
//! (RFC 3550 A.1, without probation: symmetric-RTP latching already picked the source),
//! loss (A.3) and interarrival jitter (A.8, the integer form). A few integer operations per
//! packet, no allocation.

use super::wire::ReportBlock;

const SEQ_MOD: u32 = 1 << 16;
const MAX_DROPOUT: u16 = 3000;
const MAX_MISORDER: u16 = 100;

/// Reception statistics of one source.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reception {
    /// None until the first packet.
    ssrc: Option<u32>,
    max_seq: u16,
    /// Sequence wrap-arounds, shifted (a multiple of 65536).
    cycles: u32,
    base_seq: u32,
    /// The sequence number after a large jump; a second packet there resyncs (A.1).
    bad_seq: u32,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
    /// Relative transit time of the previous audio packet (timestamp units).
    transit: Option<u32>,
    /// Jitter estimate × 16 (A.8).
    jitter: u32,
}

impl Reception {
    /// The source we report on, once heard.
    pub fn ssrc(&self) -> Option<u32> {
        self.ssrc
    }

    fn init(&mut self, ssrc: u32, seq: u16) {
        *self = Reception {
            ssrc: Some(ssrc),
            max_seq: seq,
            base_seq: u32::from(seq),
            bad_seq: SEQ_MOD + 1,
            ..Default::default()
        };
    }

    /// One accepted packet: its SSRC, sequence number, RTP timestamp and arrival time in
    /// timestamp units (any origin). `timed`: the timestamp follows the sampling clock
    /// (audio, comfort noise), so it counts for jitter; telephone-events repeat their start
    /// timestamp and do not.
    pub fn on_packet(&mut self, ssrc: u32, seq: u16, ts: u32, arrival: u32, timed: bool) {
        if self.ssrc != Some(ssrc) {
            // A new source (or the first): start over (§8.2 handles collisions; a PBX
            // that re-anchors its media changes SSRC).
            self.init(ssrc, seq);
        } else {
            let udelta = seq.wrapping_sub(self.max_seq);
            if udelta < MAX_DROPOUT {
                if seq < self.max_seq {
                    self.cycles = self.cycles.wrapping_add(SEQ_MOD);
                }
                self.max_seq = seq;
            } else if u32::from(udelta) <= SEQ_MOD - u32::from(MAX_MISORDER) {
                // A very large jump: believe it only if the next packet follows it.
                if u32::from(seq) == self.bad_seq {
                    self.init(ssrc, seq);
                } else {
                    self.bad_seq = (u32::from(seq) + 1) & (SEQ_MOD - 1);
                    return;
                }
            }
            // Else a duplicate or reordered packet: counted, max unchanged.
        }
        self.received = self.received.wrapping_add(1);
        if timed {
            let transit = arrival.wrapping_sub(ts);
            if let Some(prev) = self.transit {
                let d = i64::from((transit.wrapping_sub(prev) as i32).unsigned_abs());
                let j = i64::from(self.jitter);
                self.jitter = (j + d - ((j + 8) >> 4)).clamp(0, i64::from(u32::MAX)) as u32;
            }
            self.transit = Some(transit);
        }
    }

    /// A report block about this source (A.3), with `lsr`/`dlsr` from the RTCP side, and
    /// the interval counters moved on. None before the first packet.
    pub fn report(&mut self, lsr: u32, dlsr: u32) -> Option<ReportBlock> {
        let ssrc = self.ssrc?;
        let extended_max = self.cycles.wrapping_add(u32::from(self.max_seq));
        let expected = i64::from(extended_max) - i64::from(self.base_seq) + 1;
        let lost = expected - i64::from(self.received);
        let expected_interval = expected - i64::from(self.expected_prior);
        self.expected_prior = expected.clamp(0, i64::from(u32::MAX)) as u32;
        let received_interval = i64::from(self.received) - i64::from(self.received_prior);
        self.received_prior = self.received;
        let lost_interval = expected_interval - received_interval;
        let fraction_lost = if expected_interval <= 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval).min(255) as u8
        };
        Some(ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost: lost.clamp(-0x80_0000, 0x7F_FFFF) as i32,
            ext_highest_seq: extended_max,
            jitter: self.jitter >> 4,
            lsr,
            dlsr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_loss_wrap_and_fraction_per_interval() {
        let mut r = Reception::default();
        assert_eq!(r.report(0, 0), None);
        // 65530..=65535, 0..=9 with 3 and 4 lost: 16 expected, 14 received.
        for seq in (65530u16..=65535)
            .chain(0..10)
            .filter(|s| *s != 3 && *s != 4)
        {
            r.on_packet(9, seq, 0, 0, false);
        }
        let b = r.report(1, 2).unwrap();
        assert_eq!(b.ssrc, 9);
        assert_eq!(b.ext_highest_seq, 65536 + 9);
        assert_eq!(b.cumulative_lost, 2);
        assert_eq!(b.fraction_lost, (2 * 256 / 16) as u8);
        assert_eq!((b.lsr, b.dlsr), (1, 2));
        // Next interval: nothing lost; a duplicate makes "lost" negative overall, but the
        // fraction stays 0.
        for seq in 10..20 {
            r.on_packet(9, seq, 0, 0, false);
        }
        r.on_packet(9, 19, 0, 0, false);
        r.on_packet(9, 19, 0, 0, false);
        r.on_packet(9, 19, 0, 0, false);
        let b = r.report(0, 0).unwrap();
        assert_eq!(b.fraction_lost, 0);
        assert_eq!(b.cumulative_lost, -1);
    }

    #[test]
    fn large_jump_resyncs_only_when_confirmed() {
        let mut r = Reception::default();
        for seq in 100..110 {
            r.on_packet(1, seq, 0, 0, false);
        }
        // One stray packet far away is ignored; two in a row restart the count.
        r.on_packet(1, 40000, 0, 0, false);
        assert_eq!(r.report(0, 0).unwrap().ext_highest_seq, 109);
        r.on_packet(1, 50000, 0, 0, false);
        r.on_packet(1, 50001, 0, 0, false);
        let b = r.report(0, 0).unwrap();
        assert_eq!(b.ext_highest_seq, 50001);
        assert_eq!(b.cumulative_lost, 0);
        // A new SSRC starts over too.
        r.on_packet(2, 7, 0, 0, false);
        let b = r.report(0, 0).unwrap();
        assert_eq!((b.ssrc, b.ext_highest_seq, b.cumulative_lost), (2, 7, 0));
    }

    #[test]
    fn jitter_follows_a8() {
        let mut r = Reception::default();
        // Perfectly paced 20 ms audio: no jitter.
        for i in 0..50u32 {
            r.on_packet(1, i as u16, 1000 + 160 * i, 7 + 160 * i, true);
        }
        assert_eq!(r.report(0, 0).unwrap().jitter, 0);
        // Every other packet 80 samples (10 ms) late: |D| = 80 each time, and
        // J += (|D| - J) / 16 converges to 80.
        for i in 50..2000u32 {
            let noise = if i % 2 == 0 { 80 } else { 0 };
            r.on_packet(1, i as u16, 1000 + 160 * i, 7 + 160 * i + noise, true);
        }
        let j = r.report(0, 0).unwrap().jitter;
        assert!((75..=80).contains(&j), "jitter {j}");
        // Events (timestamp repeated) do not count.
        let before = r.report(0, 0).unwrap().jitter;
        for i in 2000..2100u32 {
            r.on_packet(1, i as u16, 5, 160 * i, false);
        }
        assert_eq!(r.report(0, 0).unwrap().jitter, before);
    }
}
