//! The forward kernel on the GPU against the f64 reference, over deliberately odd shapes,
//! every option, both storage types and each scan path forced.
//!
//! Tolerances (per element, `w` the reference value):
//! - f32: `|gpu - w| <= 2e-5 * (1 + |w|)`. The kernel is f32 throughout; the reference sees
//!   the same inputs. Logit errors are ~1e-7 relative (dot products of <= 256 terms); the
//!   weights that matter have log-weights near 0, so their relative error is of the same
//!   order; sums over up to 1024 keys keep it near 1e-6. 2e-5 leaves 10x headroom over the
//!   largest error measured on lavapipe (printed by each case).
//! - f16: the reference sees the f16-rounded inputs, so what remains is the f32 arithmetic
//!   above plus one rounding of `o` to f16: `|gpu - w| <= 2^-11 * |w| + 2e-5 * (1 + |w|)`
//!   (2^-11 is half an f16 ulp, relative).
//! - `rem` and `log rem` are f32 in both dtypes: `2e-5 * (1 + |w|)`.
//!
//! - The tensor-core path (f16, where the adapter has it) also rounds each weight to f16 before
//!   `P V`: `+ (2^-11 + T 2^-25) max|v|` (see `run_case_on`).
//!
//! Relative RMS error is printed and must stay under 1e-5 (f32) and 5e-4 (f16, rounding of
//! o is ~2.8e-4 RMS; 1e-3 on the tensor-core path). Any NaN or infinity fails.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{check_close, Rng};
use sbattn::{reference, round_to, Attention, Dtype, HostInput, HostRemainder, KernelPath, Layout, Mask, Shape};

#[derive(Clone, Copy, Debug)]
struct Case {
    shape: Shape,
    layout: Layout,
    dtype: Dtype,
    mask: Mask,
    rem: u8, // 0 discard, 1 return, 2 add value, 3 add bias
    scale: Option<f32>,
}

/// Runs `case` on every forced path and checks o, rem and log rem against the reference.
fn run_case(case: Case, seed: u64) {
    if let Some(attn) = common::attention() {
        run_case_on(attn, case, seed);
    }
}

fn run_case_on(attn: &Attention, case: Case, seed: u64) {
    let s = case.shape;
    let mut rng = Rng::new(seed);
    let nq = (s.batch() * s.seq_len() * s.heads() * s.head_dim()) as usize;
    let nkv = (s.batch() * s.seq_len() * s.kv_heads() * s.head_dim()) as usize;
    let q = round_to(&rng.normals(nq, 1.0), case.dtype);
    let k = round_to(&rng.normals(nkv, 1.0), case.dtype);
    let v = round_to(&rng.normals(nkv, 1.0), case.dtype);
    let bias = round_to(&rng.normals((s.heads() * s.head_dim()) as usize, 1.0), case.dtype);
    let remainder = match case.rem {
        0 => HostRemainder::Discard,
        1 => HostRemainder::Return,
        2 => HostRemainder::AddToValue,
        _ => HostRemainder::AddBias(&bias),
    };
    let base = HostInput::new(s, &q, &k, &v)
        .with_layout(case.layout)
        .with_dtype(case.dtype)
        .with_mask(case.mask)
        .with_scale(case.scale)
        .with_remainder(remainder);
    let want = reference::forward(&base).unwrap();
    let rel_round = if case.dtype == Dtype::F16 { 2f64.powi(-11) } else { 0.0 };
    let rms_limit = if case.dtype == Dtype::F16 { 5e-4 } else { 1e-5 };
    let max_v = v.iter().fold(0.0f64, |m, x| m.max(x.abs() as f64));
    let mut ran = 0;
    for path in common::ALL_PATHS {
        // The emulated tensor-core kernel (lavapipe's only form of it: slow to compile and to
        // run there) has its own cases in tests/coop.rs; here it runs with SBATTN_FULL_TESTS=1.
        if path == KernelPath::EmulatedCooperativeMatrix && !common::full_tests() {
            continue;
        }
        if let Err(e) = attn.forward_variant(case.dtype, s.head_dim(), path) {
            eprintln!("{case:?}: {path:?} skipped on this adapter: {e}");
            continue;
        }
        // The tensor-core path also rounds each weight to f16 (relative 2^-11, absolute
        // 2^-25 below f16's normal range) before P V: |o error| <= that times sum_j |v_j|
        // over the weights, at most (2^-11 + T 2^-25) max |v|.
        let abs_extra = if path.is_cooperative() {
            (2f64.powi(-11) + s.seq_len() as f64 * 2f64.powi(-25)) * max_v
        } else {
            0.0
        };
        let got = attn.run_host_blocking(&base.with_path(path)).unwrap();
        let (eo, rms) = check_close(&format!("{case:?} {path:?} o"), &got.o, &want.o, rel_round, abs_extra);
        let rms_limit = if path.is_cooperative() { 2.0 * rms_limit } else { rms_limit };
        assert!(rms <= rms_limit, "{case:?} {path:?}: relative RMS {rms:e} > {rms_limit:e}");
        check_close(&format!("{case:?} {path:?} log_rem"), &got.log_rem, &want.log_rem, 0.0, 0.0);
        if let Some(rem) = &got.rem {
            check_close(&format!("{case:?} {path:?} rem"), rem, &want.rem, 0.0, 0.0);
        }
        assert_eq!(got.rem.is_some(), case.rem == 1);
        eprintln!("{:?} {path:?}: max |err| {eo:.2e}, rel RMS {rms:.2e}", case);
        ran += 1;
    }
    assert!(ran > 0);
}

const TS: [u32; 9] = [1, 2, 7, 63, 64, 65, 111, 500, 1024];
const DS: [u32; 7] = [16, 32, 50, 64, 80, 128, 256];

/// Every T with every D; the other factors rotate so that each value of each appears with
/// many of the others. Long sequences get fewer heads and batch 1 to keep CI time down.
fn grid_case(ti: usize, di: usize) -> Case {
    let n = ti * DS.len() + di;
    let t = TS[ti];
    let long = t >= 500;
    let (heads, kv_heads) = match (n / 3) % 3 {
        0 => (2, 2),                           // multi-head
        1 if long => (4, 2),                   // grouped-query
        1 => (8, 2),
        _ => (if long { 2 } else { 4 }, 1),    // multi-query
    };
    let batch = if long || n.is_multiple_of(2) { 1 } else { 3 };
    Case {
        shape: Shape::new().with_batch(batch).with_seq_len(t).with_heads(heads).with_head_dim(DS[di]).with_kv_heads(kv_heads),
        layout: if (n / 2).is_multiple_of(2) { Layout::Bthd } else { Layout::Bhtd },
        dtype: if (ti + di).is_multiple_of(2) { Dtype::F32 } else { Dtype::F16 },
        mask: if (n / 5).is_multiple_of(2) { Mask::Strict } else { Mask::IncludeCurrent },
        rem: ((n / 7 + n) % 4) as u8,
        scale: None,
    }
}

macro_rules! grid_tests {
    ($($name:ident: $ti:expr;)*) => {$(
        #[test]
        fn $name() {
            for di in 0..DS.len() {
                run_case(grid_case($ti, di), 1000 + ($ti * 10 + di) as u64);
            }
        }
    )*};
}

grid_tests! {
    grid_t1: 0;
    grid_t2: 1;
    grid_t7: 2;
    grid_t63: 3;
    grid_t64: 4;
    grid_t65: 5;
    grid_t111: 6;
    grid_t500: 7;
    grid_t1024: 8;
}

/// The grid above covers each factor; this covers their full cross product on one small
/// odd shape (2 dtypes x 2 layouts x 2 masks x 4 remainders x 3 head configurations).
#[test]
fn all_options_small_shape() {
    let mut seed = 0;
    for dtype in [Dtype::F32, Dtype::F16] {
        for layout in [Layout::Bthd, Layout::Bhtd] {
            for mask in [Mask::Strict, Mask::IncludeCurrent] {
                for rem in 0..4 {
                    for (h, hk) in [(3, 3), (6, 2), (4, 1)] {
                        seed += 1;
                        let shape = Shape::new().with_batch(2).with_seq_len(37).with_heads(h).with_head_dim(24).with_kv_heads(hk);
                        run_case(Case { shape, layout, dtype, mask, rem, scale: None }, seed);
                    }
                }
            }
        }
    }
}

#[test]
fn explicit_scales() {
    for (i, scale) in [0.0f32, 0.05, 1.0, -0.3].into_iter().enumerate() {
        let shape = Shape::new().with_batch(1).with_seq_len(77).with_heads(2).with_head_dim(40);
        let case = Case { shape, layout: Layout::Bthd, dtype: Dtype::F32, mask: Mask::IncludeCurrent, rem: 1, scale: Some(scale) };
        run_case(case, 50 + i as u64);
    }
}

/// The same kernels compiled with all of wgpu's runtime checks, and with none
/// (`without_runtime_checks`), give the same results: the host-side validation is what keeps
/// them in bounds. (Every other test runs the default, index clamping without loop bounding.)
#[test]
fn runtime_check_levels() {
    if common::attention().is_none() {
        return;
    }
    let base = || Attention::with_default_adapter_blocking().unwrap();
    // SAFETY: the documented opt-in; every call is validated by the library.
    let unchecked = unsafe { base().without_runtime_checks() };
    for (attn, cases) in [(base().with_full_runtime_checks(), [(65u32, 48u32, Dtype::F32), (33, 64, Dtype::F16)]), (unchecked, [(130, 128, Dtype::F16), (33, 256, Dtype::F32)])] {
        for (i, (t, d, dtype)) in cases.into_iter().enumerate() {
            let shape = Shape::new().with_batch(2).with_seq_len(t).with_heads(4).with_head_dim(d).with_kv_heads(2);
            let case = Case { shape, layout: Layout::Bhtd, dtype, mask: Mask::Strict, rem: (i % 4) as u8, scale: None };
            run_case_on(&attn, case, 900 + i as u64);
        }
    }
}
