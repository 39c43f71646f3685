//! Arbitrary client bytes through a STOMP session over an in-memory broker.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    switchyard_stomp::fuzzing::drive_for_fuzzing(data);
});
