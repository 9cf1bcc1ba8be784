#![no_main]
// The body lives in src/harness/control.rs, shared with tests/fuzz_regressions.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| vtepd_fuzz::harness::control::run(data));
