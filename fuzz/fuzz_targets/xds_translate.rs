//! xDS: arbitrary bytes as ADS responses (any resource type, any content, in any order, with
//! warming timeouts and apply outcomes in between) through the state machine — decoding, the
//! translation into the config model (TLS transport sockets and SDS secrets included),
//! assembly and validation — once as state-of-the-world
//! responses and once as delta responses (with `removed_resources`).
//!
//! Input: the records of `sluice_xds::fuzzing` (`[tag][len u16 LE][bytes]`, `0xff` fires the
//! timer and the apply outcome, tag bit 2 a delta removal, tag bit 3 an SDS secret). Property: nothing panics, whatever
//! the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sluice_xds::fuzzing::drive(data);
    sluice_xds::fuzzing::drive_delta(data);
});
