#![no_main]
//! `carebroker::fuzz_bodies::saml`: see src/fuzz_bodies.rs for what must hold.

libfuzzer_sys::fuzz_target!(|data: &[u8]| carebroker::fuzz_bodies::saml(data));
