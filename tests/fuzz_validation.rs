//! Validation fuzzing without a GPU: proptest drives the model-based checker of
//! `tests/fuzz_model` (random calls of every op on wgpu's Noop backend, each checked against an
//! independent model of what the library must accept; the module docs list the properties).
//!
//! `SBATTN_FUZZ_CASES=N` runs `N` cases (default [`CI_CASES`]), `SBATTN_FUZZ_SEED=S` another
//! seed (default a fixed one, so CI is deterministic). A failure prints the shrunk decision
//! words; paste them into [`replay`] (or a named test below) to reproduce it.
//!
//! The Noop backend is only ever enabled in this binary (and in `fuzz/`): its instance is asked
//! for explicitly in `fuzz_model::env`, so the other test binaries, which share the `noop`
//! feature of wgpu, never see its adapter.
#![cfg(not(target_arch = "wasm32"))]

mod fuzz_model;

use fuzz_model::{check_case, gen_case, Decisions};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

/// Cases per CI run: about 8 s in the dev profile on a 2-core machine.
const CI_CASES: u32 = 10_000;

/// `name` as a number from the environment.
fn env_u64(name: &str) -> Option<u64> {
    let s = std::env::var(name).ok()?;
    Some(s.trim().parse().unwrap_or_else(|_| panic!("{name}={s} is not a number")))
}

/// Generates and checks the case of `words`.
fn replay(words: &[u64]) -> Result<(), String> {
    let case = gen_case(&mut Decisions::words(words));
    // A panic is a failure too: proptest catches it and shrinks it like any other.
    check_case(&case).map_err(|e| format!("{e}\n  case: {case:?}"))
}

#[test]
fn validation_matches_the_model() {
    let cases = env_u64("SBATTN_FUZZ_CASES").map_or(CI_CASES, |n| n as u32);
    let seed = env_u64("SBATTN_FUZZ_SEED").unwrap_or(0x5ba7_7e57);
    let config = Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let words = proptest::collection::vec(any::<u64>(), 0..160);
    let t0 = std::time::Instant::now();
    let result = runner.run(&words, |w| replay(&w).map_err(TestCaseError::fail));
    eprintln!("validation fuzz: {cases} cases (seed {seed}) in {:.1?}; outcomes of the calls:", t0.elapsed());
    for (what, n) in fuzz_model::take_stats() {
        eprintln!("  {n:>8}  {what}");
    }
    if let Err(e) = result {
        panic!("validation fuzz failed (SBATTN_FUZZ_SEED={seed} SBATTN_FUZZ_CASES={cases}):\n{e}");
    }
}

/// `SBATTN_FUZZ_WORDS="1, 2, 3"` (a failure's minimal input, as printed): replays that case
/// alone, outside proptest, so that a panic shows its location and backtrace.
#[test]
fn replay_words_from_env() {
    let Ok(words) = std::env::var("SBATTN_FUZZ_WORDS") else { return };
    let words: Vec<u64> = words
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .map(|w| w.parse().expect("a u64"))
        .collect();
    eprintln!("case: {:?}", gen_case(&mut Decisions::words(&words)));
    replay(&words).unwrap();
}

/// The all-zero stream: the simplest case of each op must be accepted.
#[test]
fn simplest_cases() {
    for op in 0..3u64 {
        // config 0, shared context, tame, op `op`, then every choice 0.
        let words = [0, 0, 0, op];
        replay(&words).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Regressions: what the fuzzer found, shrunk into named cases, each fixed and run in CI (none is
// ignored; a new one whose bug is not fixed yet gets `#[ignore]` with the bug named).
// ---------------------------------------------------------------------------------------------

use fuzz_model::{Addr, Buf, Case, Dims, FwdCase, KeySpec, Op, Rem, Run, Size, Tensor};
use sbattn::{Dtype, KernelPath, Layout, Mask, Strides};

const BTHD: Addr = Addr::Contiguous(Layout::Bthd);
const FIT: Buf = Buf { size: Size::Fit, storage: true };

fn tensor(buf: usize, addr: Addr) -> Tensor {
    Tensor { buf, offset: 0, addr }
}

/// A dense f32 forward case on a fresh context of config `config`, q k v o on buffers 0-3.
fn forward_case(config: usize, dims: Dims, o: Addr, rem: Rem) -> Case {
    Case {
        config,
        fresh: true,
        bufs: vec![FIT; 5],
        op: Op::Forward(FwdCase {
            dims,
            dtype: Dtype::F32,
            q: tensor(0, BTHD),
            k: tensor(1, BTHD),
            v: tensor(2, BTHD),
            o: tensor(3, o),
            mask: Mask::Strict,
            scale: None,
            rem,
            log_rem: None,
            path: KernelPath::Auto,
            eps: 0.0,
            coop_block_n: None,
            keys: KeySpec::Queries,
            cu: None,
        }),
    }
}

fn check(case: &Case) {
    fuzz_model::check_case(case).unwrap_or_else(|e| panic!("{e}\n  case: {case:?}"));
}

/// Fixed (src/types.rs `Shape::rows`): `B * H * T` overflowed `u64` (a panic in debug builds,
/// a wrapped row count in release, so a short `log_rem` binding) for a backward call with three
/// huge sizes.
#[test]
fn backward_rows_past_u64() {
    let dims = Dims { b: u32::MAX, t: u32::MAX, h: u32::MAX, hkv: None, d: 1 };
    let Op::Forward(fwd) = forward_case(0, dims, BTHD, Rem::Discard).op else { unreachable!() };
    let fwd = FwdCase { log_rem: Some(Run { buf: 4, offset: 0 }), ..fwd };
    let t = |buf| tensor(buf, BTHD);
    let bwd = fuzz_model::BwdCase { fwd, d_o: t(5), dq: t(6), dk: t(7), dv: t(8), d_rem: None, d_bias: None };
    check(&Case { config: 0, fresh: true, bufs: vec![FIT; 9], op: Op::Backward(Box::new(bwd)) });
}

/// Fixed (src/types.rs `Layout::strides`): the batch stride `T H D` of a contiguous layout
/// overflowed `u64` (a panic in debug builds).
#[test]
fn contiguous_strides_past_u64() {
    let dims = Dims { b: 2, t: u32::MAX, h: u32::MAX, hkv: None, d: 256 };
    check(&forward_case(0, dims, BTHD, Rem::Discard));
}

/// Fixed (src/ops/cache/mod.rs `KvCacheDesc::tensor_bytes`): `B Hkv capacity D` bytes overflowed
/// `u64` (a panic in debug builds, a wrapped size that could pass the buffer limit in release).
#[test]
fn kv_cache_bytes_past_u64() {
    let c = fuzz_model::CacheCase {
        batch: u32::MAX,
        kv_heads: u32::MAX,
        head_dim: 256,
        capacity: u32::MAX,
        dtype: Dtype::F32,
        layout: Layout::Bhtd,
        on: None,
        steps: Vec::new(),
    };
    check(&Case { config: 0, fresh: true, bufs: Vec::new(), op: Op::Cache(c) });
}

/// Fixed (src/ops/decode/mod.rs `record_decode`): the decode scratch buffers grow by doubling
/// up to the largest buffer, and were bound whole, so once an earlier call had grown one past
/// `max_storage_buffer_binding_size` every later decode on the context failed with
/// `Error::Device` ("Buffer binding 5 range .. exceeds `max_*_buffer_binding_size`"), however
/// small. Here (1 MiB binding limit, 2 MiB buffers) 80 then 81 splits of 8 rows of 64 vec4s
/// grow the partial outputs from 640 KiB to 1.25 MiB.
#[test]
fn decode_scratch_outgrows_binding_limit() {
    use fuzz_model::{CacheCase, DecodeStep, Step};
    let decode = |splits, n: usize| {
        let (q, o) = (tensor(2 + 2 * n, BTHD), tensor(3 + 2 * n, BTHD));
        Step::Decode(DecodeStep {
            heads: 8,
            n: 1,
            q,
            o,
            mask: Mask::Strict,
            scale: None,
            rem: Rem::Discard,
            log_rem: None,
            path: KernelPath::Auto,
            eps: 0.0,
            splits: Some(splits),
            lanes: None,
            load: None,
            keys_per_step: None,
        })
    };
    let append = Step::Append { k: tensor(0, BTHD), v: tensor(1, BTHD), tokens: 1, counts: None };
    let c = CacheCase {
        batch: 1,
        kv_heads: 1,
        head_dim: 256,
        capacity: 4,
        dtype: Dtype::F32,
        layout: Layout::Bhtd,
        on: None,
        steps: vec![append, decode(80, 0), decode(81, 1), decode(1, 2)],
    };
    check(&Case { config: 0, fresh: true, bufs: vec![FIT; 8], op: Op::Cache(c) });
}

/// Regression (fixed in src/ops/forward/split.rs by checking the whole call first): a call over the binding limit is split
/// into calls over halves of its sequences, each checked alone, so an output whose sequences
/// overlap (batch stride 0 here) passes: each piece is injective, and both write the same
/// memory. The unsplit call is refused (`Error::Stride` for `o`).
#[test]
fn split_forward_output_overlapping_across_pieces() {
    let dims = Dims { b: 2, t: 64, h: 4, hkv: None, d: 256 };
    check(&forward_case(1, dims, Addr::Strided(Strides { batch: 0, token: 1024, head: 256 }), Rem::Discard));
}

/// Regression (fixed likewise): the same for the aliasing rule: `rem`
/// overlaps `o` (on one buffer) for the whole call, but each piece's `rem` rows lie outside
/// its own `o` rows, so every piece passes and the second overwrites the first's `rem`.
#[test]
fn split_forward_outputs_aliasing_across_pieces() {
    let dims = Dims { b: 2, t: 64, h: 4, hkv: None, d: 256 };
    check(&forward_case(1, dims, BTHD, Rem::Return(Run { buf: 3, offset: 130_816 })));
}

/// Regression (fixed: the schedule is checked against the binding limit, and a dense call past
/// it is split; the model tolerated this as `SCHEDULE_TABLE_BUG` before): the schedule (24
/// bytes per sequence, 1.5 MiB here against config 0's 1 MiB binding limit) was bound without
/// a check: `Error::Device` and an invalid encoder instead of a typed error or a split. The call
/// must now run (split over its sequences).
#[test]
fn forward_schedule_table_over_binding_limit() {
    let dims = Dims { b: 65_535, t: 1, h: 1, hkv: None, d: 1 };
    let case = forward_case(0, dims, BTHD, Rem::Discard);
    let env = fuzz_model::env(0);
    let Op::Forward(c) = &case.op else { unreachable!() };
    let bufs: Vec<wgpu::Buffer> = (0..4).map(|_| sbattn::zeroed(&env.device, "q", 4 * 65_535)).collect();
    let t = |b| sbattn::TensorRef::bthd(&bufs[b]);
    let call = sbattn::Forward::new(c.dims.shape(), Dtype::F32, t(0), t(1), t(2), t(3));
    let mut enc = env.device.create_command_encoder(&Default::default());
    let r = env.shared.forward(&mut enc, &call);
    assert!(r.is_ok(), "{r:?}");
}
