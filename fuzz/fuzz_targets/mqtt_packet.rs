//! MQTT 3.1.1 packet decoder (mqttbytes behind our checks): no panic, and
//! decode → encode → decode gives the same packet.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    switchyard_mqtt::fuzzing::decode_for_fuzzing(data);
});
