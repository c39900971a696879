#![no_main]
//! Fuzz target `info`: see `pincoderouting::fuzzing::info`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pincoderouting::fuzzing::info(data);
});
