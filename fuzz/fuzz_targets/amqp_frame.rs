//! AMQP frame decoder: arbitrary bytes, fed in two halves, must never panic; decoded frames re-encode and decode to the same
//! frame.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchyard_amqp::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let split = data.len() / 2;
    let dec = Decoder::new(131_072);
    let mut buf = BytesMut::from(&data[..split]);
    let mut frames = Vec::new();
    let mut failed = false;
    loop {
        match dec.decode(&mut buf) {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => break,
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    if !failed {
        buf.extend_from_slice(&data[split..]);
        while let Ok(Some(f)) = dec.decode(&mut buf) {
            frames.push(f);
        }
    }
    for f in frames {
        if let Some(again) = switchyard_amqp::codec::round_trip(&f) {
            assert_eq!(again, f);
        }
    }
});
