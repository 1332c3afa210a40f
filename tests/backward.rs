//! The backward op on the GPU against the f64 reference (`sbattn::reference::backward`), over
//! deliberately odd shapes, every option, both storage types and every portable path the
//! adapter has; saturated and huge logits; determinism; bad inputs.
//!
//! Most cases go through `Attention::run_backward_host`, which runs the GPU forward pass (saving
//! `log rem`) and then the backward pass on its outputs: end to end, as training does.
//!
//! Tolerances. A gradient element is a sum of up to `T` (dq) or `T H / Hkv` (dk, dv) terms of
//! mixed sign, so an element-wise relative bound fails wherever terms cancel; the rounding error
//! of an element is instead a small multiple of the f32 unit roundoff `EPS = 2^-24` times the
//! sum of the magnitudes of its terms, its error scale (`magnitudes` in tests/common/grad.rs,
//! with `check_grad` and the constants named here: the reference's loops with absolute values, each
//! weight widened by the relative error `exp` gives it from the absolute error of its logits
//! and log stick, and `sum_{l < j} u_l` counted at the size of the row's whole sum, because the
//! kernels form it as a difference). Each element must satisfy
//!
//!   `|gpu - ref| <= TOL EPS scale + (f16: 2^-11 |ref| + 2^-25) + 1e-35`
//!
//! with `TOL = 128`: the largest `|gpu - ref| / (EPS scale)` measured on lavapipe over every
//! case here is 8 (printed per case as `max |err| / (eps scale)`), so over 10x headroom; the
//! f16 terms are the one rounding of each output to f16 (half an ulp, and half the subnormal
//! spacing), the last term f32's underflow of weights below `1e-38`. f16 inputs are rounded
//! before the reference sees them (`round_to`), so nothing else differs; the forward's f16 `o`
//! does not matter (the dq kernel corrects for its rounding exactly). On top, for random
//! inputs (gradients of the size of their terms) the relative RMS error must stay under
//! `1e-5` (f32; measured <= 6.6e-7) and `5e-4` (f16, where the output rounding alone is
//! `2^-11 / sqrt 3 ~ 2.8e-4`; measured <= 2.3e-4). Saturated and huge logits give gradients far
//! below their terms' size (where FlashAttention's `dP - rowsum(dO O)` loses relative precision
//! the same way), so there only the element-wise bound applies. Any NaN or infinity fails.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::grad::{check_grad, magnitudes};
use common::{tweak, Rng};
use sbattn::{
    reference, round_to, Attention, Backward, BufferRef, Dtype, Error, Forward, HostGradients, HostInput, HostRemainder,
    KernelPath, Layout, Mask, Remainder, Shape, Strides, TensorRef,
};

/// Portable paths of the backward pass.
const PATHS: [KernelPath; 2] = [KernelPath::Subgroup, KernelPath::SharedMemory];

#[derive(Clone, Copy, Debug)]
struct Case {
    shape: Shape,
    layout: Layout,
    dtype: Dtype,
    mask: Mask,
    rem: u8, // 0 discard, 1 return, 2 add value, 3 add bias
}

/// Inputs of a case, rounded to its dtype (what the GPU sees, so what the reference gets).
struct Data {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    bias: Vec<f32>,
    d_o: Vec<f32>,
    d_rem: Vec<f32>,
}

impl Data {
    fn random(case: &Case, seed: u64, q_std: f32) -> Self {
        let s = case.shape;
        let mut rng = Rng::new(seed);
        let nq = (s.batch() * s.seq_len() * s.heads() * s.head_dim()) as usize;
        let nkv = (s.batch() * s.seq_len() * s.kv_heads() * s.head_dim()) as usize;
        let r = |x: Vec<f32>| round_to(&x, case.dtype);
        Data {
            q: r(rng.normals(nq, q_std)),
            k: r(rng.normals(nkv, 1.0)),
            v: r(rng.normals(nkv, 1.0)),
            bias: r(rng.normals((s.heads() * s.head_dim()) as usize, 1.0)),
            d_o: r(rng.normals(nq, 1.0)),
            d_rem: rng.normals(s.rows() as usize, 1.0),
        }
    }

    fn input(&self, case: &Case) -> HostInput<'_> {
        let remainder = match case.rem {
            0 => HostRemainder::Discard,
            1 => HostRemainder::Return,
            2 => HostRemainder::AddToValue,
            _ => HostRemainder::AddBias(&self.bias),
        };
        HostInput::new(case.shape, &self.q, &self.k, &self.v)
            .with_layout(case.layout)
            .with_dtype(case.dtype)
            .with_mask(case.mask)
            .with_remainder(remainder)
    }

    fn d_rem(&self, case: &Case) -> Option<&[f32]> {
        (case.rem == 1).then_some(&self.d_rem[..])
    }
}

/// Checks every gradient of `got` against `want`; returns the worst (ratio, rms) over them.
fn check_all(what: &str, got: &HostGradients, want: &reference::Gradients, mag: &reference::Gradients, dtype: Dtype, rms: bool) -> (f64, f64) {
    let mut worst = (0.0f64, 0.0f64);
    let mut acc = |e: (f64, f64)| worst = (worst.0.max(e.0), worst.1.max(e.1));
    acc(check_grad(&format!("{what} dq"), &got.dq, &want.dq, &mag.dq, dtype, rms));
    acc(check_grad(&format!("{what} dk"), &got.dk, &want.dk, &mag.dk, dtype, rms));
    acc(check_grad(&format!("{what} dv"), &got.dv, &want.dv, &mag.dv, dtype, rms));
    assert_eq!(got.dbias.is_some(), want.dbias.is_some(), "{what}: dbias presence");
    if let (Some(g), Some(w), Some(m)) = (&got.dbias, &want.dbias, &mag.dbias) {
        // dbias is f32 in every dtype: no output rounding.
        acc(check_grad(&format!("{what} dbias"), g, w, m, Dtype::F32, rms));
    }
    worst
}

/// The portable paths this adapter runs for `dtype` at head dim `d` (at least one).
fn paths(attn: &Attention, dtype: Dtype, d: u32) -> Vec<KernelPath> {
    let ok: Vec<KernelPath> = PATHS.into_iter().filter(|p| attn.backward_variant(dtype, d, *p).is_ok()).collect();
    assert!(!ok.is_empty(), "no backward path for {dtype:?} D {d}");
    ok
}

/// Runs `data` of `case` on every portable path against the reference (`rms`: also check the
/// relative RMS error, for inputs whose gradients are of the scale of their terms).
fn run_data(attn: &Attention, case: &Case, data: &Data, label: &str, rms: bool) {
    run_data_on(attn, case, data, label, rms, &paths(attn, case.dtype, case.shape.head_dim()));
}

/// `run_data` on the given paths.
fn run_data_on(attn: &Attention, case: &Case, data: &Data, label: &str, rms: bool, paths: &[KernelPath]) {
    let input = data.input(case);
    let want = reference::backward(&input, &data.d_o, data.d_rem(case)).unwrap();
    let mag = magnitudes(&input, &data.d_o);
    for &path in paths {
        let got = attn.run_backward_host_blocking(&input.with_path(path), &data.d_o, data.d_rem(case)).unwrap();
        let (ratio, rel_rms) = check_all(&format!("{label}{case:?} {path:?}"), &got, &want, &mag, case.dtype, rms);
        eprintln!("{label}{case:?} {path:?}: max |err| / (eps scale) {ratio:.2}, rel RMS {rel_rms:.2e}");
    }
}

/// Runs `case` on one path: `path` when the adapter has it, else the other one.
fn run_case(case: Case, seed: u64, path: KernelPath) {
    let Some(attn) = common::attention() else { return };
    let all = paths(attn, case.dtype, case.shape.head_dim());
    let path = if all.contains(&path) { path } else { all[0] };
    run_data_on(attn, &case, &Data::random(&case, seed, 1.0), "", true, &[path]);
}

const TS: [u32; 7] = [1, 2, 7, 63, 65, 111, 500];
const DS: [u32; 5] = [16, 50, 64, 80, 128];

/// T x D, with the other factors rotating (as tests/forward.rs's grid) so that each value of
/// each factor meets many of the others; the longest sequence gets 2 head dims, small heads
/// and batch 1 to keep lavapipe's time down. The path rotates too (`grid_path`): with the
/// dtype alternating along both axes, every head-dim tiling runs on both paths and in both
/// dtypes but not in all four pairs, which keeps the pipelines to compile (the cost of a cold
/// lavapipe run) at 12 rather than 16; `all_options_small_shape` runs every pair.
fn grid_case(ti: usize, di: usize) -> Case {
    let n = ti * DS.len() + di;
    let t = TS[ti];
    let long = t >= 500;
    let (heads, kv_heads) = match (n / 2) % 3 {
        0 => (2, 2),                         // multi-head
        1 if long => (4, 2),                 // grouped-query
        1 => (8, 2),
        _ => (if long { 2 } else { 4 }, 1),  // multi-query
    };
    let batch = if long || n.is_multiple_of(2) { 1 } else { 2 };
    Case {
        shape: Shape::new().with_batch(batch).with_seq_len(t).with_heads(heads).with_kv_heads(kv_heads).with_head_dim(DS[di]),
        layout: if (n / 3).is_multiple_of(2) { Layout::Bthd } else { Layout::Bhtd },
        dtype: if (ti + di).is_multiple_of(2) { Dtype::F32 } else { Dtype::F16 },
        mask: if (n / 5).is_multiple_of(2) { Mask::Strict } else { Mask::IncludeCurrent },
        rem: ((n / 7 + n) % 4) as u8,
    }
}

fn grid_path(ti: usize) -> KernelPath {
    PATHS[ti % 2]
}

macro_rules! grid_tests {
    ($($name:ident: $ti:expr, $ds:expr;)*) => {$(
        #[test]
        fn $name() {
            for di in $ds {
                // CI runs D 16, 50 and 128 (three of the four head-dim tilings; each tiling's
                // kernels compile cold on lavapipe); SBATTN_FULL_TESTS=1 adds D 64 and 80.
                if (di == 2 || di == 3) && !common::full_tests() {
                    continue;
                }
                run_case(grid_case($ti, di), 2000 + ($ti * 10 + di) as u64, grid_path($ti));
            }
        }
    )*};
}

grid_tests! {
    grid_t1: 0, 0..DS.len();
    grid_t2: 1, 0..DS.len();
    grid_t7: 2, 0..DS.len();
    grid_t63: 3, 0..DS.len();
    grid_t65: 4, 0..DS.len();
    grid_t111: 5, 0..DS.len();
    grid_t500: 6, [1, 4];
}

/// Every remainder mode with both masks, both dtypes and three head configurations (MHA, GQA,
/// MQA) on one small odd shape: the full cross product the grid only samples.
#[test]
fn all_options_small_shape() {
    let mut seed = 0;
    for dtype in [Dtype::F32, Dtype::F16] {
        for mask in [Mask::Strict, Mask::IncludeCurrent] {
            for rem in 0..4 {
                for (h, hk) in [(3, 3), (6, 2), (4, 1)] {
                    seed += 1;
                    let shape = Shape::new().with_batch(2).with_seq_len(37).with_heads(h).with_kv_heads(hk).with_head_dim(24);
                    let layout = if seed % 2 == 0 { Layout::Bthd } else { Layout::Bhtd };
                    let case = Case { shape, layout, dtype, mask, rem };
                    if let Some(attn) = common::attention() {
                        // CI: the paths alternate over the cases (each path still meets every
                        // dtype, mask, mode and head configuration); SBATTN_FULL_TESTS=1: all.
                        let all = paths(attn, dtype, 24);
                        let on = if common::full_tests() { all } else { vec![all[seed as usize % all.len()]] };
                        run_data_on(attn, &case, &Data::random(&case, 100 + seed, 1.0), "", true, &on);
                    }
                }
            }
        }
    }
}

/// Logits `z_ij = a_i b_j` with `a_i, b_j` uniform in `[sqrt 5, sqrt 30]` (so `z` in `[5, 30]`:
/// every beta saturated, the nearest key takes nearly all of the stick) or its negative (`z` in
/// `[-30, -5]`: every key takes almost nothing and the stick lasts to the start, `rem ~ 1`).
fn saturated(case: &Case, seed: u64, sign: f32) -> Data {
    let s = case.shape;
    let mut data = Data::random(case, seed, 1.0);
    let mut rng = Rng::new(seed ^ 77);
    let d = s.head_dim() as usize;
    // q_i = a_i e, k_j = b_j e with |e|^2 = sqrt(D): z = (1 / sqrt(D)) a_i b_j sqrt(D).
    let e = (d as f32).powf(-0.25);
    let lo = 5f64.sqrt();
    let hi = 30f64.sqrt();
    let mut draw = |n: usize, sign: f32| -> Vec<f32> {
        let mut out = Vec::with_capacity(n * d);
        for _ in 0..n {
            let a = (lo + (hi - lo) * rng.uniform()) as f32 * sign;
            out.extend(std::iter::repeat_n(a * e, d));
        }
        round_to(&out, case.dtype)
    };
    data.q = draw(data.q.len() / d, 1.0);
    data.k = draw(data.k.len() / d, sign);
    data
}

#[test]
fn saturated_logits() {
    let Some(attn) = common::attention() else { return };
    for (i, dtype) in [Dtype::F32, Dtype::F16].into_iter().enumerate() {
        for (j, sign) in [1.0f32, -1.0].into_iter().enumerate() {
            for rem in 0..4 {
                let shape = Shape::new().with_batch(1).with_seq_len(150).with_heads(4).with_kv_heads(2).with_head_dim(32);
                let case = Case { shape, layout: Layout::Bthd, dtype, mask: Mask::IncludeCurrent, rem };
                let label = if sign > 0.0 { "saturated " } else { "lasting stick " };
                run_data(attn, &case, &saturated(&case, 300 + (i * 8 + j * 4 + rem as usize) as u64, sign), label, false);
            }
        }
    }
}

/// Logits of `+-1e4` (every beta exactly 0 or 1): finite gradients, and the reference's.
#[test]
fn huge_logits_are_finite() {
    let Some(attn) = common::attention() else { return };
    for (i, dtype) in [Dtype::F32, Dtype::F16].into_iter().enumerate() {
        for rem in 0..4 {
            let shape = Shape::new().with_batch(1).with_seq_len(70).with_heads(2).with_head_dim(16);
            let case = Case { shape, layout: Layout::Bthd, dtype, mask: Mask::Strict, rem };
            let mut data = Data::random(&case, 400 + (i * 4 + rem as usize) as u64, 1.0);
            // q_i = +-c e, k_j = +-c e with z = c^2 = 1e4 in magnitude, random signs.
            let mut rng = Rng::new(41 + i as u64);
            let c = 100f32 * 16f32.powf(-0.25);
            let mut signed = |n: usize| -> Vec<f32> {
                (0..n).flat_map(|_| std::iter::repeat_n(if rng.uniform() < 0.5 { -c } else { c }, 16)).collect()
            };
            data.q = round_to(&signed(70 * 2), dtype);
            data.k = round_to(&signed(70 * 2), dtype);
            run_data(attn, &case, &data, "huge ", false);
        }
    }
}

/// Two runs of the same call give bitwise equal gradients on every path (no atomics, fixed
/// summation orders), also across a second call in between with other sizes (the scratch is
/// shared).
#[test]
fn deterministic() {
    let Some(attn) = common::attention() else { return };
    for (i, rem) in [2u8, 3, 1].into_iter().enumerate() {
        let shape = Shape::new().with_batch(2).with_seq_len(130).with_heads(4).with_kv_heads(2).with_head_dim(64);
        let case = Case { shape, layout: Layout::Bthd, dtype: if i == 1 { Dtype::F16 } else { Dtype::F32 }, mask: Mask::Strict, rem };
        let data = Data::random(&case, 500 + i as u64, 1.0);
        let other = Case { shape: Shape::new().with_seq_len(300).with_heads(2).with_head_dim(40), ..case };
        let other_data = Data::random(&other, 600, 1.0);
        for path in paths(attn, case.dtype, 64) {
            let run = |c: &Case, d: &Data| attn.run_backward_host_blocking(&d.input(c).with_path(path), &d.d_o, d.d_rem(c)).unwrap();
            let a = run(&case, &data);
            let _ = run(&other, &other_data);
            let b = run(&case, &data);
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
            assert_eq!(bits(&a.dq), bits(&b.dq), "{path:?} dq");
            assert_eq!(bits(&a.dk), bits(&b.dk), "{path:?} dk");
            assert_eq!(bits(&a.dv), bits(&b.dv), "{path:?} dv");
            assert_eq!(a.dbias.as_deref().map(bits), b.dbias.as_deref().map(bits), "{path:?} dbias");
        }
    }
}

/// Every path gives the same gradients to rounding (a check of the two scan files against
/// each other, at a size with several key tiles).
#[test]
fn paths_agree() {
    let Some(attn) = common::attention() else { return };
    let shape = Shape::new().with_batch(1).with_seq_len(200).with_heads(2).with_head_dim(48);
    let case = Case { shape, layout: Layout::Bhtd, dtype: Dtype::F32, mask: Mask::IncludeCurrent, rem: 1 };
    let data = Data::random(&case, 700, 1.0);
    let runs: Vec<HostGradients> = paths(attn, case.dtype, 48)
        .into_iter()
        .map(|p| attn.run_backward_host_blocking(&data.input(&case).with_path(p), &data.d_o, data.d_rem(&case)).unwrap())
        .collect();
    let mag = magnitudes(&data.input(&case), &data.d_o);
    for r in &runs[1..] {
        for (a, b, m) in [(&runs[0].dq, &r.dq, &mag.dq), (&runs[0].dk, &r.dk, &mag.dk), (&runs[0].dv, &r.dv, &mag.dv)] {
            let want: Vec<f64> = a.iter().map(|x| *x as f64).collect();
            check_grad("path vs path", b, &want, m, Dtype::F32, true);
        }
    }
}

/// The low-level call on strided tensors: q, k, v slices of one fused QKV buffer (token stride
/// over all of it, offsets), d_o in [B, H, T, D], dq in [B, T, H, D], dk and dv side by side in
/// one buffer; a forward call records `log rem` first, the backward runs on its outputs.
#[test]
fn strided_tensors_end_to_end() {
    let Some(attn) = common::attention() else { return };
    let (b, t, h, hk, d) = (2u32, 45u32, 4u32, 2u32, 20u32);
    let shape = Shape::new().with_batch(b).with_seq_len(t).with_heads(h).with_kv_heads(hk).with_head_dim(d);
    let case = Case { shape, layout: Layout::Bthd, dtype: Dtype::F32, mask: Mask::Strict, rem: 2 };
    let data = Data::random(&case, 800, 1.0);
    // Fused QKV: per token [q heads | k heads | v heads], batch-major, plus a 3-element prefix.
    let width = ((h + 2 * hk) * d) as usize;
    let mut qkv = vec![0.0f32; 3 + (b * t) as usize * width];
    let (qn, kn) = ((h * d) as usize, (hk * d) as usize);
    for bt in 0..(b * t) as usize {
        let row = 3 + bt * width;
        qkv[row..row + qn].copy_from_slice(&data.q[bt * qn..(bt + 1) * qn]);
        qkv[row + qn..row + qn + kn].copy_from_slice(&data.k[bt * kn..(bt + 1) * kn]);
        qkv[row + qn + kn..row + qn + 2 * kn].copy_from_slice(&data.v[bt * kn..(bt + 1) * kn]);
    }
    let strides = Strides { batch: t as u64 * width as u64, token: width as u64, head: d as u64 };
    let qkv_buf = common::buffer(attn, &qkv, Dtype::F32);
    let fused = |off: usize| TensorRef::strided(&qkv_buf, strides).at_offset(3 + off as u64);
    // d_o in [B, H, T, D].
    let bhtd = Layout::Bhtd.strides(t, h, d);
    let mut d_o_bhtd = vec![0.0f32; data.d_o.len()];
    for bi in 0..b {
        for ti in 0..t {
            for hi in 0..h {
                let src = Layout::Bthd.strides(t, h, d).index(bi, ti, hi) as usize;
                let dst = bhtd.index(bi, ti, hi) as usize;
                d_o_bhtd[dst..dst + d as usize].copy_from_slice(&data.d_o[src..src + d as usize]);
            }
        }
    }
    let d_o = common::buffer(attn, &d_o_bhtd, Dtype::F32);
    let o = common::zeros(attn, data.q.len() as u64 * 4);
    let log_rem = common::zeros(attn, shape.rows() * 4);
    let dq = common::zeros(attn, data.q.len() as u64 * 4);
    // Outputs may share a buffer when their bindings (256-byte aligned) do not overlap.
    let kv_len = data.k.len() as u64;
    let (dk_at, dv_at) = (64u64, 64 + kv_len.next_multiple_of(64));
    let dkv = common::zeros(attn, (dv_at + kv_len) * 4);
    for path in paths(attn, Dtype::F32, d) {
        let fwd = Forward::new(shape, Dtype::F32, fused(0), fused(qn), fused(qn + kn), TensorRef::bthd(&o))
            .with_remainder(Remainder::AddToValue)
            .with_log_rem(BufferRef::new(&log_rem));
        let bwd = Backward::new(&fwd, TensorRef::bhtd(&d_o), TensorRef::bthd(&dq), TensorRef::bthd(&dkv).at_offset(dk_at), TensorRef::bthd(&dkv).at_offset(dv_at))
            .with_path(path);
        let mut enc = attn.device().create_command_encoder(&Default::default());
        attn.forward(&mut enc, &fwd).unwrap();
        attn.backward(&mut enc, &bwd).unwrap();
        let out = common::read(attn, enc, &[(&dq, data.q.len() as u64 * 4, Dtype::F32), (&dkv, (dv_at + kv_len) * 4, Dtype::F32)]);
        let want = reference::backward(&data.input(&case), &data.d_o, None).unwrap();
        let (kv0, kv1) = (dk_at as usize, dv_at as usize);
        let got = HostGradients { dq: out[0].clone(), dk: out[1][kv0..kv0 + kv_len as usize].to_vec(), dv: out[1][kv1..].to_vec(), dbias: None };
        let mag = magnitudes(&data.input(&case), &data.d_o);
        let (ratio, rms) = check_all(&format!("strided {path:?}"), &got, &want, &mag, Dtype::F32, true);
        assert!(out[1][..kv0].iter().all(|x| *x == 0.0), "wrote before dk");
        eprintln!("strided {path:?}: max |err| / (eps scale) {ratio:.2}, rel RMS {rms:.2e}");
    }
}

/// The kernels compiled without wgpu's runtime checks (`without_runtime_checks`) give the
/// same gradients: the host-side validation and the kernels' own guards keep every index in
/// range. (Every other test runs the default checks; one path, to spare lavapipe compiles.)
#[test]
fn without_runtime_checks() {
    if common::attention().is_none() {
        return;
    }
    // SAFETY: the documented opt-in; every call is validated by the library.
    let attn = unsafe { Attention::with_default_adapter_blocking().unwrap().without_runtime_checks() };
    let shape = Shape::new().with_batch(2).with_seq_len(70).with_heads(4).with_kv_heads(2).with_head_dim(40);
    for rem in [2, 3] {
        let case = Case { shape, layout: Layout::Bhtd, dtype: Dtype::F32, mask: Mask::Strict, rem };
        run_data_on(&attn, &case, &Data::random(&case, 900 + rem as u64, 1.0), "unchecked ", true, &[KernelPath::Auto]);
    }
}

// ---- bad inputs ----

const T: u32 = 10;
const H: u32 = 2;
const D: u32 = 8;

struct Bufs {
    q: wgpu::Buffer,
    k: wgpu::Buffer,
    v: wgpu::Buffer,
    o: wgpu::Buffer,
    d_o: wgpu::Buffer,
    dq: wgpu::Buffer,
    dk: wgpu::Buffer,
    dv: wgpu::Buffer,
    log_rem: wgpu::Buffer,
    d_rem: wgpu::Buffer,
    rem: wgpu::Buffer,
    bias: wgpu::Buffer,
    d_bias: wgpu::Buffer,
}

fn buf(attn: &Attention, elems: u64) -> wgpu::Buffer {
    common::plain(attn, (elems * 4).max(4), wgpu::BufferUsages::STORAGE)
}

fn bufs(attn: &Attention) -> Bufs {
    let n = (T * H * D) as u64;
    let r = (H * T) as u64;
    Bufs {
        q: buf(attn, n),
        k: buf(attn, n),
        v: buf(attn, n),
        o: buf(attn, n),
        d_o: buf(attn, n),
        dq: buf(attn, n),
        dk: buf(attn, n),
        dv: buf(attn, n),
        log_rem: buf(attn, r),
        d_rem: buf(attn, r),
        rem: buf(attn, r),
        bias: buf(attn, (H * D) as u64),
        d_bias: buf(attn, (H * D) as u64),
    }
}

fn fwd(b: &Bufs) -> Forward<'_> {
    let shape = Shape::new().with_batch(1).with_seq_len(T).with_heads(H).with_head_dim(D);
    let t = |x| TensorRef::bthd(x);
    Forward::new(shape, Dtype::F32, t(&b.q), t(&b.k), t(&b.v), t(&b.o)).with_log_rem(BufferRef::new(&b.log_rem))
}

fn call(b: &Bufs) -> Backward<'_> {
    let t = |x| TensorRef::bthd(x);
    Backward::new(&fwd(b), t(&b.d_o), t(&b.dq), t(&b.dk), t(&b.dv))
}

fn with_rem<'a>(b: &'a Bufs, rem: Remainder<'a>) -> Backward<'a> {
    tweak(call(b), |c| c.remainder = rem)
}

/// Runs the call, expecting an error, and checks the encoder is still clean.
fn err(attn: &Attention, c: &Backward<'_>) -> Error {
    let mut enc = attn.device().create_command_encoder(&Default::default());
    let e = attn.backward(&mut enc, c).expect_err("expected an error");
    let scope = attn.device().push_error_scope(wgpu::ErrorFilter::Validation);
    attn.queue().submit([enc.finish()]);
    assert!(pollster::block_on(scope.pop()).is_none(), "encoder was left invalid");
    eprintln!("{e}");
    e
}

#[test]
fn valid_calls_are_accepted() {
    let attn = gpu_or_skip!();
    let b = bufs(attn);
    let calls = [
        call(&b),
        with_rem(&b, Remainder::Return(BufferRef::new(&b.rem))).with_d_rem(BufferRef::new(&b.d_rem)),
        with_rem(&b, Remainder::AddToValue),
        with_rem(&b, Remainder::AddBias(BufferRef::new(&b.bias))).with_d_bias(BufferRef::new(&b.d_bias)),
    ];
    let mut enc = attn.device().create_command_encoder(&Default::default());
    for c in &calls {
        attn.backward(&mut enc, c).unwrap();
    }
    let scope = attn.device().push_error_scope(wgpu::ErrorFilter::Validation);
    attn.queue().submit([enc.finish()]);
    assert!(pollster::block_on(scope.pop()).is_none());
}

#[test]
fn missing_or_extra_gradient_buffers() {
    let attn = gpu_or_skip!();
    let b = bufs(attn);
    let c = tweak(call(&b), |c| c.log_rem = None);
    assert!(matches!(err(attn, &c), Error::InvalidParameter { name: "log_rem", .. }));
    let c = with_rem(&b, Remainder::Return(BufferRef::new(&b.rem)));
    assert!(matches!(err(attn, &c), Error::InvalidParameter { name: "d_rem", .. }));
    let c = call(&b).with_d_rem(BufferRef::new(&b.d_rem));
    assert!(matches!(err(attn, &c), Error::InvalidParameter { name: "d_rem", .. }));
    let c = with_rem(&b, Remainder::AddBias(BufferRef::new(&b.bias)));
    assert!(matches!(err(attn, &c), Error::InvalidParameter { name: "d_bias", .. }));
    let c = with_rem(&b, Remainder::AddToValue).with_d_bias(BufferRef::new(&b.d_bias));
    assert!(matches!(err(attn, &c), Error::InvalidParameter { name: "d_bias", .. }));
}

/// Every tensor and run too small for the shape is a `BufferTooSmall` naming it.
#[test]
fn buffers_too_small() {
    let attn = gpu_or_skip!();
    let b = bufs(attn);
    let small = buf(attn, (T * H * D - 1) as u64);
    let small_rows = buf(attn, (H * T - 1) as u64);
    let small_bias = buf(attn, (H * D - 1) as u64);
    let t = TensorRef::bthd(&small);
    let cases: Vec<(&str, Backward<'_>)> = vec![
        ("q", tweak(call(&b), |c| c.q = t)),
        ("k", tweak(call(&b), |c| c.k = t)),
        ("v", tweak(call(&b), |c| c.v = t)),
        ("o", tweak(call(&b), |c| c.o = t)),
        ("d_o", tweak(call(&b), |c| c.d_o = t)),
        ("dq", tweak(call(&b), |c| c.dq = t)),
        ("dk", tweak(call(&b), |c| c.dk = t)),
        ("dv", tweak(call(&b), |c| c.dv = t)),
        ("dv", tweak(call(&b), |c| c.dv = c.dv.at_offset(1))),
        ("log_rem", call(&b).with_log_rem(BufferRef::new(&small_rows))),
        ("d_rem", with_rem(&b, Remainder::Return(BufferRef::new(&b.rem))).with_d_rem(BufferRef::new(&small_rows))),
        ("bias", with_rem(&b, Remainder::AddBias(BufferRef::new(&small_bias))).with_d_bias(BufferRef::new(&b.d_bias))),
        ("d_bias", with_rem(&b, Remainder::AddBias(BufferRef::new(&b.bias))).with_d_bias(BufferRef::new(&small_bias))),
    ];
    for (name, c) in cases {
        match err(attn, &c) {
            Error::BufferTooSmall { tensor, .. } => assert_eq!(tensor, name),
            e => panic!("{name}: {e:?}"),
        }
    }
}

/// The gradients of GQA have `kv_heads` heads: a dk or dv sized for the query heads is fine,
/// but one sized for fewer than `kv_heads` is not; q-shaped gradients must hold all heads.
#[test]
fn grouped_shapes() {
    let attn = gpu_or_skip!();
    let b = bufs(attn); // buffers hold T x 2 heads x D
    let shape = Shape::new().with_batch(1).with_seq_len(T).with_heads(4).with_kv_heads(2).with_head_dim(D);
    let c = tweak(call(&b), |c| c.shape = shape);
    assert!(matches!(err(attn, &c), Error::BufferTooSmall { tensor: "q", .. }));
    let shape = Shape::new().with_batch(1).with_seq_len(T).with_heads(3).with_kv_heads(2).with_head_dim(D);
    let c = tweak(call(&b), |c| c.shape = shape);
    assert!(matches!(err(attn, &c), Error::HeadsNotDivisible { heads: 3, kv_heads: 2 }));
    let shape = Shape::new().with_batch(1).with_seq_len(T).with_heads(H).with_head_dim(300);
    let c = tweak(call(&b), |c| c.shape = shape);
    assert!(matches!(err(attn, &c), Error::HeadDim { head_dim: 300, .. }));
}

#[test]
fn outputs_must_not_alias() {
    let attn = gpu_or_skip!();
    let b = bufs(attn);
    let t = |x| TensorRef::bthd(x);
    let cases: Vec<((&str, &str), Backward<'_>)> = vec![
        (("q", "dq"), tweak(call(&b), |c| c.dq = t(&b.q))),
        (("o", "dk"), tweak(call(&b), |c| c.dk = t(&b.o))),
        (("d_o", "dv"), tweak(call(&b), |c| c.dv = t(&b.d_o))),
        (("log_rem", "dq"), tweak(call(&b), |c| c.log_rem = Some(BufferRef::new(&b.dq)))),
        (("dk", "dv"), tweak(call(&b), |c| c.dv = t(&b.dk))),
        (("dq", "dk"), tweak(call(&b), |c| c.dk = t(&b.dq))),
        (
            ("bias", "d_bias"),
            with_rem(&b, Remainder::AddBias(BufferRef::new(&b.bias))).with_d_bias(BufferRef::new(&b.bias)),
        ),
        (
            ("dv", "d_bias"),
            with_rem(&b, Remainder::AddBias(BufferRef::new(&b.bias))).with_d_bias(BufferRef::new(&b.dv)),
        ),
        (
            ("d_rem", "dq"),
            with_rem(&b, Remainder::Return(BufferRef::new(&b.rem))).with_d_rem(BufferRef::new(&b.dq)),
        ),
    ];
    for ((x, y), c) in cases {
        match err(attn, &c) {
            Error::Aliasing { a, b } => assert_eq!((a, b), (x, y)),
            e => panic!("{x}/{y}: {e:?}"),
        }
    }
}

#[test]
fn bad_output_strides_and_usage() {
    let attn = gpu_or_skip!();
    let b = bufs(attn);
    let c = tweak(call(&b), |c| c.dq = TensorRef::strided(&b.dq, Strides { batch: 0, token: (H * D) as u64, head: 4 }));
    assert!(matches!(err(attn, &c), Error::Stride { tensor: "dq", .. }));
    let c = tweak(call(&b), |c| c.dk = TensorRef::strided(&b.dk, Strides { batch: 0, token: 0, head: D as u64 }));
    assert!(matches!(err(attn, &c), Error::Stride { tensor: "dk", .. }));
    let uniform = common::plain(attn, (T * H * D * 4) as u64, wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST);
    let c = tweak(call(&b), |c| c.d_o = TensorRef::bthd(&uniform));
    assert!(matches!(err(attn, &c), Error::BufferUsage { tensor: "d_o", .. }));
    let c = tweak(call(&b), |c| c.scale = Some(f32::NAN));
    assert!(matches!(err(attn, &c), Error::NonFiniteScale(_)));
    for path in [KernelPath::CooperativeMatrix, KernelPath::EmulatedCooperativeMatrix] {
        assert!(matches!(err(attn, &call(&b).with_path(path)), Error::Unsupported(_)));
    }
}

/// Host-side helper: wrong slice lengths and d_rem semantics.
#[test]
fn host_data_checks() {
    let attn = gpu_or_skip!();
    let shape = Shape::new().with_batch(1).with_seq_len(T).with_heads(H).with_head_dim(D);
    let n = (T * H * D) as usize;
    let x = vec![0.5f32; n];
    let input = HostInput::new(shape, &x, &x, &x);
    let e = attn.run_backward_host_blocking(&input, &x[1..], None).unwrap_err();
    assert!(matches!(e, Error::HostData { what: "d_o", .. }));
    let rows = vec![0.0f32; (H * T) as usize];
    let e = attn.run_backward_host_blocking(&input, &x, Some(&rows)).unwrap_err();
    assert!(matches!(e, Error::InvalidParameter { name: "d_rem", .. }));
    let e = attn.run_backward_host_blocking(&input.with_remainder(HostRemainder::Return), &x, Some(&rows[1..])).unwrap_err();
    assert!(matches!(e, Error::HostData { what: "d_rem", .. }));
}
