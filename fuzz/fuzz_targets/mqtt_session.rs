//! MQTT session: arbitrary client bytes driven through the session state
//! machine over an in-memory engine. Oracle: no panic, all output decodes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    switchyard_mqtt::fuzzing::drive_for_fuzzing(data);
});
