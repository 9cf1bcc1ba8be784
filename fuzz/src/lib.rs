//! The bodies of vtepd's fuzz targets.
//!
//! Each `fuzz_targets/<name>.rs` is one line calling `harness::<module>::run`; the same module is
//! compiled into `tests/fuzz_regressions.rs` (by `#[path]`), so every input kept under
//! `tests/fuzz-regressions/<target>/` and every seed under `fuzz/seeds/<target>/` is replayed by
//! plain `cargo test`, through exactly the code the fuzzer ran.
pub mod harness;
