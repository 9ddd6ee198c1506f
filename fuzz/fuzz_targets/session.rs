#![no_main]
// Body and oracle: epmd_rs::fuzzing::session_body (src/fuzzing.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| epmd_rs::fuzzing::session_body(data));
