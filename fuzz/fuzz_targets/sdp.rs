#![no_main]
//! Fuzz target `sdp`: see `pincoderouting::fuzzing::sdp`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pincoderouting::fuzzing::sdp(data);
});
