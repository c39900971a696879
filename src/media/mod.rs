//! Media: the RTP session of a call (RFC 3550) and its RTCP, G.711, DTMF from every source, WAV files,
//! prompts and the prompt player.

pub mod dtmf;
pub mod g711;
pub mod player;
pub mod prompt;
pub mod rtcp;
pub mod rtp;
pub mod wav;
