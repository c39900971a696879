#![no_main]
//! Fuzz target `config`: see `pincoderouting::fuzzing::config`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pincoderouting::fuzzing::config(data);
});
