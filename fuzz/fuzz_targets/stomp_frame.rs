//! STOMP frame decode (our nom codec) under each version, with the
//! decode → encode → decode round trip.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    switchyard_stomp::fuzzing::decode_for_fuzzing(data);
});
