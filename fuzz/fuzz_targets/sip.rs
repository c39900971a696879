#![no_main]
//! Fuzz target `sip`: see `pincoderouting::fuzzing::sip`.
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use std::time::Instant;

/// One virtual epoch for the whole run (the core never reads the clock itself).
static T0: OnceLock<Instant> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    pincoderouting::fuzzing::sip(*T0.get_or_init(Instant::now), data);
});
