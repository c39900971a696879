//! Media: the RTP session of a call (RFC 3550). G.711 codecs, DTMF detection and the
//! prompt player join here in later issues.

pub mod dtmf;
pub mod g711;
pub mod rtp;
pub mod wav;
