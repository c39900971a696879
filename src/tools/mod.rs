//! Command-line tools for testers and ops (not part of the service's call path).

pub mod dtmf_detect;
pub mod pcapgen;
