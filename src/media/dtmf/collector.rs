//! One digit stream per call: RFC 4733 events, in-band tones and SIP INFO, selected by the
//! DTMF mode so a phone that sends two kinds never gives doubles.

/// Which sources count (SIP INFO always does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DtmfMode {
    /// RFC 4733 when telephone-event was negotiated, else in-band.
    #[default]
    Auto,
    Rfc4733,
    Inband,
    Info,
}

/// Placeholder until the collector lands in this file.
#[derive(Debug, Default)]
pub struct DigitCollector;
