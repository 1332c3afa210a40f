//! Validation fuzzing with libFuzzer: the model-based checker of `tests/fuzz_model` (random
//! calls of every op on wgpu's Noop backend, each checked against an independent model of
//! what the library must accept) fed from libFuzzer's bytes ([`Decisions::bytes`]).
//!
//! ```sh
//! cargo +nightly fuzz run validation -- -max_total_time=600
//! ```
//!
//! A failure (a panic, or a disagreement with the model) aborts with the case's description;
//! `cargo +nightly fuzz run validation fuzz/artifacts/validation/crash-...` replays it.
#![no_main]

#[path = "../../tests/fuzz_model/mod.rs"]
mod fuzz_model;

use fuzz_model::{check_case, gen_case, Decisions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let case = gen_case(&mut Decisions::bytes(data));
    if let Err(e) = check_case(&case) {
        panic!("{e}\n  case: {case:?}");
    }
});
