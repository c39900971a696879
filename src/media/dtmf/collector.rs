//! One digit stream per call: RFC 4733 events, in-band tones and SIP INFO, selected by the
//! DTMF mode and merged so one key press is one digit whichever ways it arrives: a phone
//! that sends a key both as SIP INFO and as RFC 4733 (Linphone with both on) gives it
//! once, even when the INFO copies trail by seconds. Media time is the arrival clock since
//! the call's media started, corrected for in-band detection delay.

use super::inband::{InbandDetector, InbandEvent};
use super::rfc4733::{Rfc4733Decoder, Rfc4733Event};
use super::{Digit, DigitEvent, DigitSource};
use crate::media::g711;
use crate::sip::sdp::Codec;
use std::collections::VecDeque;
use std::time::Instant;

/// Which sources count (SIP INFO always does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DtmfMode {
    /// RFC 4733 when telephone-event was negotiated, else in-band.
    #[default]
    Auto,
    /// RFC 4733 only.
    Rfc4733,
    /// In-band tones only.
    Inband,
    /// SIP INFO only.
    Info,
}

/// The per-call digit collector.
#[derive(Debug)]
pub struct DigitCollector {
    mode: DtmfMode,
    te: bool,
    codec: Codec,
    media_start: Instant,
    rfc: Rfc4733Decoder,
    /// Boxed and created only while in-band detection is on for this call.
    inband: Option<Box<InbandDetector>>,
    events: VecDeque<DigitEvent>,
    /// Digits accepted lately, to recognise the same press arriving another way.
    recent: [Option<Recent>; RECENT],
}

/// A copy of a key from another source within this long of the accepted one is the same
/// press. Phones send both ways at once; in-band detection lags ~40–60 ms; SIP INFO may
/// trail RTP by seconds (Linphone over UDP holds each INFO until the previous INFO
/// transaction has ended: Timer K, 5 s). Each press absorbs at most one copy per source,
/// so a wide window never merges two real presses sent both ways.
const SAME_PRESS_MS: u64 = 15_000;
/// How many accepted digits are remembered for matching: a whole PIN and its retries.
const RECENT: usize = 32;

/// An accepted digit and the other sources whose copy of it has been seen.
#[derive(Debug, Clone, Copy)]
struct Recent {
    digit: Digit,
    source: DigitSource,
    at_ms: u64,
    /// Bit per `DigitSource` already matched to this press.
    matched: u8,
}

fn bit(s: DigitSource) -> u8 {
    match s {
        DigitSource::Rfc4733 => 1,
        DigitSource::Inband => 2,
        DigitSource::Info => 4,
    }
}

impl DigitCollector {
    pub fn new(now: Instant, mode: DtmfMode) -> Self {
        DigitCollector {
            mode,
            te: false,
            codec: Codec::Pcmu,
            media_start: now,
            rfc: Rfc4733Decoder::new(),
            inband: None,
            events: VecDeque::new(),
            recent: [None; RECENT],
        }
    }

    /// A (re)negotiation: whether telephone-event is on, and the audio codec. A re-INVITE
    /// that adds or removes telephone-event switches the sources mid-call.
    pub fn negotiated(&mut self, te: bool, codec: Codec) {
        self.te = te;
        self.codec = codec;
        if self.inband_on() {
            self.inband.get_or_insert_with(Box::default);
        } else {
            self.inband = None;
        }
    }

    fn inband_on(&self) -> bool {
        match self.mode {
            DtmfMode::Auto => !self.te,
            DtmfMode::Inband => true,
            DtmfMode::Rfc4733 | DtmfMode::Info => false,
        }
    }

    fn rfc_on(&self) -> bool {
        match self.mode {
            DtmfMode::Auto | DtmfMode::Rfc4733 => self.te,
            DtmfMode::Inband | DtmfMode::Info => false,
        }
    }

    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.media_start).as_millis() as u64
    }

    /// Accepts a digit unless it is another source's copy of a press already accepted:
    /// the same key, from a different source, within `SAME_PRESS_MS`, matched to the
    /// oldest such press not yet matched for this source. "11" sent both ways is two
    /// presses, each with its copy.
    fn push(&mut self, digit: Digit, source: DigitSource, at_ms: u64) {
        let copy_of = self
            .recent
            .iter_mut()
            .flatten()
            .filter(|r| {
                r.digit == digit
                    && r.source != source
                    && r.matched & bit(source) == 0
                    && r.at_ms.abs_diff(at_ms) <= SAME_PRESS_MS
            })
            .min_by_key(|r| r.at_ms);
        if let Some(r) = copy_of {
            r.matched |= bit(source);
            return;
        }
        let slot = self
            .recent
            .iter_mut()
            .min_by_key(|r| r.map_or(0, |r| r.at_ms.saturating_add(1)));
        if let Some(slot) = slot {
            *slot = Some(Recent {
                digit,
                source,
                at_ms,
                matched: 0,
            });
        }
        self.events.push_back(DigitEvent {
            digit,
            source,
            at_ms,
        });
    }

    /// Audio in the negotiated codec.
    pub fn on_audio(&mut self, now: Instant, payload: &[u8]) {
        let Some(det) = self.inband.as_mut() else {
            return;
        };
        det.process_g711(payload, g711::decode_table_f32(self.codec));
        let pos = det.position();
        let arrival = self.ms(now);
        while let Some(e) = self.inband.as_mut().and_then(|d| d.poll_event()) {
            if let InbandEvent::Begin { digit, at_sample } = e {
                let behind = pos.saturating_sub(at_sample) / 8;
                self.push(digit, DigitSource::Inband, arrival.saturating_sub(behind));
            }
        }
    }

    /// A telephone-event payload (RFC 4733).
    pub fn on_event(&mut self, now: Instant, ts: u32, marker: bool, payload: &[u8]) {
        if !self.rfc_on() {
            return;
        }
        for e in self
            .rfc
            .handle(now, ts, marker, payload)
            .into_iter()
            .flatten()
        {
            if let Rfc4733Event::Begin { digit, .. } = e {
                let at = self.ms(now);
                self.push(digit, DigitSource::Rfc4733, at);
            }
        }
    }

    /// A digit from SIP INFO (always accepted).
    pub fn on_info(&mut self, now: Instant, digit: Digit) {
        let at = self.ms(now);
        self.push(digit, DigitSource::Info, at);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.rfc.poll_timeout()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = self.rfc.handle_timeout(now);
    }

    /// The next digit, in arrival order.
    pub fn poll_digit(&mut self) -> Option<DigitEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ev(code: u8, end: bool) -> [u8; 4] {
        [code, if end { 0x80 } else { 0 }, 0, 160]
    }

    /// 60 ms of the key '5' (770 + 1336 Hz) in µ-law, then 60 ms of silence.
    fn tone5() -> Vec<u8> {
        let mut pcm = super::super::dual_tone(770.0, 1336.0, 60, 8000.0);
        pcm.extend([0i16; 480]);
        pcm.iter().map(|x| g711::encode(Codec::Pcmu, *x)).collect()
    }

    fn drain(c: &mut DigitCollector) -> Vec<(char, DigitSource)> {
        std::iter::from_fn(|| c.poll_digit())
            .map(|d| (d.digit.as_char(), d.source))
            .collect()
    }

    fn feed_audio(c: &mut DigitCollector, t0: Instant, audio: &[u8]) {
        for (i, p) in audio.chunks(160).enumerate() {
            c.on_audio(t0 + Duration::from_millis(20 * i as u64), p);
        }
    }

    #[test]
    fn auto_with_telephone_event_ignores_inband_no_doubles() {
        let t0 = crate::testutil::epoch();
        let mut c = DigitCollector::new(t0, DtmfMode::Auto);
        c.negotiated(true, Codec::Pcmu);
        feed_audio(&mut c, t0, &tone5());
        c.on_event(t0, 100, true, &ev(5, false));
        c.on_event(t0, 100, false, &ev(5, true));
        assert_eq!(drain(&mut c), vec![('5', DigitSource::Rfc4733)]);
    }

    #[test]
    fn auto_without_telephone_event_uses_inband() {
        let t0 = crate::testutil::epoch();
        let mut c = DigitCollector::new(t0, DtmfMode::Auto);
        c.negotiated(false, Codec::Pcmu);
        c.on_event(t0, 100, true, &ev(1, false));
        feed_audio(&mut c, t0, &tone5());
        let d: Vec<_> = std::iter::from_fn(|| c.poll_digit()).collect();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].digit.as_char(), '5');
        assert_eq!(d[0].source, DigitSource::Inband);
        assert!(d[0].at_ms <= 20, "began near 0 ms: {}", d[0].at_ms);
    }

    #[test]
    fn reinvite_switches_mode_and_info_always_counts() {
        let t0 = crate::testutil::epoch();
        let mut c = DigitCollector::new(t0, DtmfMode::Auto);
        c.negotiated(true, Codec::Pcmu);
        c.on_info(t0, Digit::from_char('9').unwrap());
        c.negotiated(false, Codec::Pcmu);
        c.on_event(t0, 200, true, &ev(2, false));
        feed_audio(&mut c, t0, &tone5());
        assert_eq!(
            drain(&mut c),
            vec![('9', DigitSource::Info), ('5', DigitSource::Inband)]
        );
        for (mode, want) in [
            (DtmfMode::Rfc4733, vec![('3', DigitSource::Rfc4733)]),
            (DtmfMode::Inband, vec![('5', DigitSource::Inband)]),
            (DtmfMode::Info, vec![]),
        ] {
            let mut c = DigitCollector::new(t0, mode);
            c.negotiated(true, Codec::Pcmu);
            c.on_event(t0, 300, true, &ev(3, false));
            feed_audio(&mut c, t0, &tone5());
            assert_eq!(drain(&mut c), want, "{mode:?}");
        }
    }

    #[test]
    fn a_key_sent_as_info_and_rfc4733_is_one_digit_and_repeats_stay_repeats() {
        let t0 = crate::testutil::epoch();
        let ms = |n| t0 + Duration::from_millis(n);
        let d = |c| Digit::from_char(c).unwrap();
        let mut c = DigitCollector::new(t0, DtmfMode::Auto);
        c.negotiated(true, Codec::Pcmu);
        // "1", "1", "2": INFO first for the first press, RTP first for the others, and the
        // second press's INFO trailing behind the third's RTP.
        c.on_info(ms(0), d('1'));
        c.on_event(ms(5), 1000, true, &ev(1, false));
        c.on_event(ms(60), 1000, false, &ev(1, true));
        c.on_event(ms(300), 2000, true, &ev(1, false));
        c.on_event(ms(360), 2000, false, &ev(1, true));
        c.on_event(ms(600), 3000, true, &ev(2, false));
        c.on_info(ms(610), d('1'));
        c.on_info(ms(620), d('2'));
        assert_eq!(
            drain(&mut c),
            vec![
                ('1', DigitSource::Info),
                ('1', DigitSource::Rfc4733),
                ('2', DigitSource::Rfc4733)
            ]
        );
        // Long after, the same key again by INFO alone is a new press.
        c.on_info(ms(3000), d('2'));
        assert_eq!(drain(&mut c), vec![('2', DigitSource::Info)]);
        // The same source twice quickly is two presses, never merged.
        c.on_info(ms(3100), d('7'));
        c.on_info(ms(3200), d('7'));
        assert_eq!(drain(&mut c).len(), 2);
    }

    /// Linphone over UDP holds each SIP INFO until the previous INFO transaction has ended
    /// (Timer K, 5 s): key 1's INFO comes at once, the INFO copies of the later keys come
    /// 4–5 s after their RFC 4733 events, in a burst. Still one digit per key.
    #[test]
    fn info_copies_arriving_seconds_late_in_a_burst_still_count_once() {
        let t0 = crate::testutil::epoch();
        let ms = |n| t0 + Duration::from_millis(n);
        let d = |c| Digit::from_char(c).unwrap();
        let mut c = DigitCollector::new(t0, DtmfMode::Auto);
        c.negotiated(true, Codec::Pcmu);
        let keys = "12341234#";
        for (i, k) in keys.chars().enumerate() {
            let at = 1000 * i as u64;
            if i == 0 {
                c.on_info(ms(at), d(k));
            }
            let code = d(k).event_code();
            c.on_event(ms(at + 5), 1000 * (i as u32 + 1), true, &ev(code, false));
            c.on_event(ms(at + 65), 1000 * (i as u32 + 1), false, &ev(code, true));
        }
        for (i, k) in keys.chars().enumerate().skip(1) {
            c.on_info(ms(5000 + 3 * i as u64), d(k));
        }
        let got: String = drain(&mut c).iter().map(|x| x.0).collect();
        assert_eq!(got, keys);
    }
}
