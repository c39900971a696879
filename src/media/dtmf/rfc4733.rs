//! RFC 4733 telephone-event decoding (§2.3, §2.5.1): one press per event timestamp,
//! reported when its first packet arrives (start packets may be lost), however many updates
//! and repeated end packets follow. Handles lost end packets (timeout), reordering,
//! duplicates, missing marker bits and long presses split into segments when the 16-bit
//! duration would wrap (§2.5.1.3).

use super::Digit;
use std::time::{Duration, Instant};

/// Without a packet for this long, a press is over even if no end packet came.
pub const END_TIMEOUT: Duration = Duration::from_millis(500);

/// One parsed event block (§2.3): the first block of a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventBlock {
    pub event: u8,
    pub end: bool,
    pub volume: u8,
    pub duration: u16,
}

impl EventBlock {
    pub fn parse(payload: &[u8]) -> Option<EventBlock> {
        let b: &[u8; 4] = payload.get(..4)?.try_into().ok()?;
        Some(EventBlock {
            event: b[0],
            end: b[1] & 0x80 != 0,
            volume: b[1] & 0x3F,
            duration: u16::from_be_bytes([b[2], b[3]]),
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Press {
    /// RTP timestamp of the current segment.
    ts: u32,
    event: u8,
    last_seen: Instant,
    /// Longest duration reported for this segment.
    duration: u16,
    ended: bool,
}

/// What the decoder reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rfc4733Event {
    /// A key went down at this RTP timestamp.
    Begin { digit: Digit, ts: u32 },
    /// The key came up (end bit, a new press, or the end timeout).
    End { ts: u32 },
}

/// The decoder for one RTP stream.
#[derive(Debug, Default)]
pub struct Rfc4733Decoder {
    current: Option<Press>,
}

/// Serial-number comparison of RTP timestamps (RFC 1982 style): is `a` before `b`?
fn ts_before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

impl Rfc4733Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one telephone-event packet. Returns at most two events (an implicit end of
    /// the previous press, then a begin).
    pub fn handle(
        &mut self,
        now: Instant,
        ts: u32,
        marker: bool,
        payload: &[u8],
    ) -> [Option<Rfc4733Event>; 2] {
        let mut out = [None, None];
        let Some(block) = EventBlock::parse(payload) else {
            return out;
        };
        let Some(digit) = Digit::from_event(block.event) else {
            // Not a DTMF key (flash, tones...): ignored.
            return out;
        };
        if let Some(p) = &mut self.current {
            if p.ts == ts {
                // Same press: update, duplicate, or (repeated) end.
                p.last_seen = now;
                p.duration = p.duration.max(block.duration);
                if block.end && !p.ended {
                    p.ended = true;
                    out[0] = Some(Rfc4733Event::End { ts });
                }
                return out;
            }
            if ts_before(ts, p.ts) {
                // A late packet of an older press: already handled.
                return out;
            }
            let continuation = block.event == p.event
                && !marker
                && !p.ended
                && p.duration >= 0xFF00
                && ts.wrapping_sub(p.ts) <= p.duration as u32 + 1600;
            if continuation {
                // §2.5.1.3: a long press continues in a new segment at ts + duration.
                p.ts = ts;
                p.duration = block.duration;
                p.last_seen = now;
                if block.end {
                    p.ended = true;
                    out[0] = Some(Rfc4733Event::End { ts });
                }
                return out;
            }
            if !p.ended {
                out[0] = Some(Rfc4733Event::End { ts: p.ts });
            }
        }
        // A new press: reported on its first packet, whatever kind it is.
        self.current = Some(Press {
            ts,
            event: block.event,
            last_seen: now,
            duration: block.duration,
            ended: block.end,
        });
        let begin = Some(Rfc4733Event::Begin { digit, ts });
        match out {
            [None, _] => out = [begin, block.end.then_some(Rfc4733Event::End { ts })],
            [end @ Some(_), _] => out = [end, begin],
        }
        out
    }

    /// When the current press times out without an end packet.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.current
            .filter(|p| !p.ended)
            .map(|p| p.last_seen + END_TIMEOUT)
    }

    /// Ends a press whose end packets were all lost.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Rfc4733Event> {
        let p = self.current.as_mut()?;
        if !p.ended && now >= p.last_seen + END_TIMEOUT {
            p.ended = true;
            return Some(Rfc4733Event::End { ts: p.ts });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(event: u8, end: bool, duration: u16) -> [u8; 4] {
        let d = duration.to_be_bytes();
        [event, if end { 0x8A } else { 0x0A }, d[0], d[1]]
    }

    fn begins(evs: &[Option<Rfc4733Event>]) -> Vec<char> {
        evs.iter()
            .flatten()
            .filter_map(|e| match e {
                Rfc4733Event::Begin { digit, .. } => Some(digit.as_char()),
                _ => None,
            })
            .collect()
    }

    /// Plays a list of (ts, marker, event, end, duration) packets; returns begun digits.
    fn play(d: &mut Rfc4733Decoder, pkts: &[(u32, bool, u8, bool, u16)]) -> Vec<char> {
        let t0 = crate::testutil::epoch();
        let mut all = vec![];
        for (i, (ts, m, e, end, dur)) in pkts.iter().enumerate() {
            let now = t0 + Duration::from_millis(20 * i as u64);
            all.extend(d.handle(now, *ts, *m, &pkt(*e, *end, *dur)));
        }
        begins(&all)
    }

    #[test]
    fn normal_press_with_updates_and_triple_end_is_one_digit() {
        let mut d = Rfc4733Decoder::new();
        let mut p = vec![(1000, true, 5, false, 160)];
        p.extend((2..6).map(|i| (1000, false, 5, false, 160 * i)));
        p.extend([(1000, false, 5, true, 960); 3]);
        assert_eq!(play(&mut d, &p), vec!['5']);
    }

    #[test]
    fn digit_begins_on_first_packet_without_waiting_for_end() {
        let mut d = Rfc4733Decoder::new();
        let t0 = crate::testutil::epoch();
        let r = d.handle(t0, 1000, true, &pkt(11, false, 160));
        assert!(matches!(r[0], Some(Rfc4733Event::Begin { ts: 1000, .. })));
        assert_eq!(begins(&r), vec!['#']);
    }

    #[test]
    fn lost_start_packets_and_missing_marker() {
        let mut d = Rfc4733Decoder::new();
        // First packet seen is an update without marker; next press seen only as end.
        let p = [
            (1000, false, 1, false, 480),
            (1000, false, 1, true, 800),
            (3000, false, 2, true, 800),
            (3000, false, 2, true, 800),
        ];
        assert_eq!(play(&mut d, &p), vec!['1', '2']);
    }

    #[test]
    fn same_key_twice_is_two_digits() {
        let mut d = Rfc4733Decoder::new();
        let p = [
            (1000, true, 7, false, 160),
            (1000, false, 7, true, 800),
            (2600, true, 7, false, 160),
            (2600, false, 7, true, 800),
        ];
        assert_eq!(play(&mut d, &p), vec!['7', '7']);
    }

    #[test]
    fn reordered_and_duplicated_packets() {
        let mut d = Rfc4733Decoder::new();
        let p = [
            (1000, true, 3, false, 160),
            (2600, true, 4, false, 160),
            (1000, false, 3, true, 800), // late end of the previous press
            (2600, true, 4, false, 160), // duplicate
            (1000, false, 3, false, 320), // very late update
            (2600, false, 4, true, 800),
        ];
        assert_eq!(play(&mut d, &p), vec!['3', '4']);
    }

    #[test]
    fn lost_end_packets_end_the_press_by_timeout() {
        let mut d = Rfc4733Decoder::new();
        let t0 = crate::testutil::epoch();
        d.handle(t0, 1000, true, &pkt(9, false, 160));
        assert_eq!(d.poll_timeout(), Some(t0 + END_TIMEOUT));
        assert_eq!(d.handle_timeout(t0 + END_TIMEOUT / 2), None);
        assert_eq!(
            d.handle_timeout(t0 + END_TIMEOUT),
            Some(Rfc4733Event::End { ts: 1000 })
        );
        assert_eq!(d.poll_timeout(), None);
        // A straggler of the timed-out press is not a new digit.
        let r = d.handle(t0 + END_TIMEOUT * 2, 1000, false, &pkt(9, true, 800));
        assert!(begins(&r).is_empty());
    }

    #[test]
    fn long_press_over_16_bit_duration_is_one_digit() {
        let mut d = Rfc4733Decoder::new();
        let base = u32::MAX - 30_000; // the RTP timestamp wraps during the press too
        let mut p = vec![(base, true, 0, false, 160)];
        p.extend((1..=409).map(|i| (base, false, 0, false, (160 * i) as u16)));
        p.push((base, false, 0, false, 0xFFFF));
        // New segment at ts + 0xFFFF, no marker, same event.
        let seg = base.wrapping_add(0xFFFF);
        p.extend((1..=50).map(|i| (seg, false, 0, false, 160 * i)));
        p.push((seg, false, 0, true, 8000));
        assert_eq!(play(&mut d, &p), vec!['0']);
    }

    #[test]
    fn non_dtmf_events_and_short_payloads_ignored() {
        let mut d = Rfc4733Decoder::new();
        let t0 = crate::testutil::epoch();
        assert!(begins(&d.handle(t0, 1, true, &pkt(16, false, 160))).is_empty());
        assert!(begins(&d.handle(t0, 2, true, &[1, 2])).is_empty());
        assert_eq!(
            begins(&d.handle(t0, 3, true, &pkt(15, false, 160))),
            vec!['D']
        );
    }
}
