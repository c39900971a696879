//! A call loop's deadlines (see `Timers`). Public for the `frame_scheduling` benchmark
//! (`benches/core.rs`); nothing outside the driver uses it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Milliseconds in the timer ring: a frame's deadline (20 ms ahead) always fits; SIP and
/// session timers further out wait in the heap.
pub const RING: u64 = 1024;

/// A loop's deadlines: a ring of one-millisecond slots for what is due within the next
/// second (every media frame: O(1) to file and to fire), a heap for later ones. A deadline
/// is filed in the slot of the millisecond it falls in, rounded up, and fires once that
/// millisecond has begun — never early, at most a millisecond late (the slot's width; the
/// loop's timerfd wakes it at the slot's start). Entries whose call has since filed another
/// deadline are skipped by the caller (stale).
pub struct Timers {
    origin: Instant,
    /// The first millisecond (since `origin`) not yet fired.
    cursor: u64,
    slots: Vec<Vec<(Instant, u64)>>,
    in_ring: usize,
    far: BinaryHeap<Reverse<(Instant, u64)>>,
}

impl Timers {
    pub fn new(origin: Instant) -> Self {
        Timers {
            origin,
            cursor: 0,
            slots: (0..RING).map(|_| Vec::new()).collect(),
            in_ring: 0,
            far: BinaryHeap::new(),
        }
    }

    /// The millisecond `at` falls in, rounded up.
    fn tick_of(&self, at: Instant) -> u64 {
        let d = at.saturating_duration_since(self.origin);
        let ms = d.as_millis() as u64;
        if d.subsec_nanos().is_multiple_of(1_000_000) {
            ms
        } else {
            ms + 1
        }
    }

    pub fn push(&mut self, at: Instant, key: u64) {
        let tick = self.tick_of(at).max(self.cursor);
        if tick < self.cursor + RING {
            if let Some(slot) = self.slots.get_mut((tick % RING) as usize) {
                slot.push((at, key));
                self.in_ring += 1;
                return;
            }
        }
        self.far.push(Reverse((at, key)));
    }

    /// Moves every deadline due by `now` into `out`.
    pub fn take_due(&mut self, now: Instant, out: &mut Vec<(Instant, u64)>) {
        let now_tick = now.saturating_duration_since(self.origin).as_millis() as u64;
        while self.cursor <= now_tick {
            if self.in_ring == 0 {
                self.cursor = now_tick + 1;
                break;
            }
            if let Some(slot) = self.slots.get_mut((self.cursor % RING) as usize) {
                self.in_ring -= slot.len();
                out.append(slot);
            }
            self.cursor += 1;
        }
        while let Some(Reverse((at, key))) = self.far.peek().copied() {
            if at > now {
                break;
            }
            self.far.pop();
            out.push((at, key));
        }
    }

    /// When the earliest deadline comes due (the start of its millisecond for the ring).
    pub fn next(&self) -> Option<Instant> {
        let ring = (self.in_ring > 0)
            .then(|| {
                (self.cursor..self.cursor + RING).find(|t| {
                    self.slots
                        .get((t % RING) as usize)
                        .is_some_and(|s| !s.is_empty())
                })
            })
            .flatten()
            .map(|t| self.origin + Duration::from_millis(t));
        let far = self.far.peek().map(|Reverse((at, _))| *at);
        match (ring, far) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(t: &mut Timers, now: Instant) -> Vec<u64> {
        let mut out = Vec::new();
        t.take_due(now, &mut out);
        for (at, _) in &out {
            assert!(*at <= now, "fired early");
        }
        out.into_iter().map(|(_, k)| k).collect()
    }

    #[test]
    fn timers_fire_in_their_millisecond_never_early() {
        let t0 = Instant::now();
        let ms = |n: u64| Duration::from_millis(n);
        let mut t = Timers::new(t0);
        t.push(t0 + ms(20), 1);
        t.push(t0 + ms(20) + Duration::from_micros(300), 2);
        t.push(t0 + ms(5000), 3); // beyond the ring: the heap
        t.push(t0, 4); // due at once
        assert_eq!(t.next(), Some(t0));
        assert_eq!(due(&mut t, t0), vec![4]);
        assert_eq!(t.next(), Some(t0 + ms(20)));
        assert!(due(&mut t, t0 + ms(19)).is_empty());
        assert_eq!(due(&mut t, t0 + ms(20)), vec![1]);
        // 20.3 ms is filed in the 21st millisecond: not at 20.9, at 21.
        assert!(due(&mut t, t0 + ms(20) + Duration::from_micros(900)).is_empty());
        assert_eq!(due(&mut t, t0 + ms(21)), vec![2]);
        assert_eq!(t.next(), Some(t0 + ms(5000)));
        // A long gap (the loop was busy): everything due comes out at once.
        t.push(t0 + ms(30), 5);
        t.push(t0 + ms(900), 6);
        assert_eq!(due(&mut t, t0 + ms(6000)), vec![5, 6, 3]);
        assert_eq!(t.next(), None);
        // The ring wraps: deadlines a second and more after the origin still fit.
        t.push(t0 + ms(6020), 7);
        assert_eq!(t.far.len(), 0, "within a second of now: the ring");
        assert_eq!(due(&mut t, t0 + ms(6020)), vec![7]);
        // A deadline already past is due next turn.
        t.push(t0 + ms(10), 8);
        assert_eq!(due(&mut t, t0 + ms(6021)), vec![8]);
    }
}
