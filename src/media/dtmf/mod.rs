//! DTMF from every source: RFC 4733 telephone-events (`rfc4733`), in-band tones (`inband`),
//! SIP INFO bodies (`info`), merged into one digit stream per call (`collector`).
//! Digits are secrets: nothing here logs one, and `Digit`'s Debug is redacted.

pub mod collector;
pub mod inband;
pub mod info;
pub mod rfc4733;

pub use collector::{DigitCollector, DtmfMode};

/// One DTMF key. Debug is redacted so a digit can never reach a log by accident; use
/// `as_char` where the value itself is needed (the PIN comparison, `dtmf-detect`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digit(u8);

impl std::fmt::Debug for Digit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Digit(<redacted>)")
    }
}

const KEYS: &[u8; 16] = b"0123456789*#ABCD";

impl Digit {
    /// From an RFC 4733 event code (0–9, 10 = *, 11 = #, 12–15 = A–D).
    pub fn from_event(code: u8) -> Option<Digit> {
        (code < 16).then_some(Digit(code))
    }

    /// From a key character (case-insensitive for A–D).
    pub fn from_char(c: char) -> Option<Digit> {
        let c = c.to_ascii_uppercase() as u8;
        KEYS.iter().position(|k| *k == c).map(|i| Digit(i as u8))
    }

    /// The key as a character. Never log it.
    pub fn as_char(self) -> char {
        // A Digit is only ever built with a code < 16, so the fallback is never taken.
        KEYS.get(usize::from(self.0))
            .map_or(char::REPLACEMENT_CHARACTER, |&k| char::from(k))
    }

    /// The RFC 4733 event code.
    pub fn event_code(self) -> u8 {
        self.0
    }
}

/// Where a digit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DigitSource {
    Rfc4733,
    Inband,
    Info,
}

impl DigitSource {
    pub fn as_str(self) -> &'static str {
        match self {
            DigitSource::Rfc4733 => "rfc4733",
            DigitSource::Inband => "inband",
            DigitSource::Info => "info",
        }
    }
}

/// A digit as the call sees it: the key, its source, and the media time (ms since the
/// call's media started) when the key went down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigitEvent {
    pub digit: Digit,
    pub source: DigitSource,
    pub at_ms: u64,
}

/// Synthesizes `ms` milliseconds of two sines of peak `amplitude` each at 8 kHz (a DTMF key
/// when `f1`/`f2` are its frequencies) — for tests, tools and capture generation.
pub fn dual_tone(f1: f32, f2: f32, ms: usize, amplitude: f32) -> Vec<i16> {
    let w = |f: f32| 2.0 * std::f32::consts::PI * f / 8000.0;
    (0..ms * 8)
        .map(|i| {
            let n = i as f32;
            (amplitude * ((w(f1) * n).sin() + (w(f2) * n).sin())) as i16
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_map_both_ways_and_debug_is_redacted() {
        for (i, c) in "0123456789*#ABCD".chars().enumerate() {
            let d = Digit::from_char(c).unwrap();
            assert_eq!(d.as_char(), c);
            assert_eq!(Digit::from_event(i as u8), Some(d));
        }
        assert_eq!(Digit::from_char('b').map(Digit::as_char), Some('B'));
        assert_eq!(Digit::from_char('x'), None);
        assert_eq!(Digit::from_event(16), None);
        let s = format!("{:?}", Digit::from_char('7').unwrap());
        assert!(!s.contains('7'), "{s}");
    }
}
