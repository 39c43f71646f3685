//! AMQP session: arbitrary bytes after a valid protocol header, decoded into
//! frames and driven through the session state machine over an in-memory
//! engine. Oracle: no panic, and everything the session writes decodes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    switchyard_amqp::session::drive_for_fuzzing(data);
});
