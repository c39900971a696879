#![no_main]
//! Fuzz target `wav`: see `pincoderouting::fuzzing::wav`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pincoderouting::fuzzing::wav(data);
});
