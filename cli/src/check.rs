//! `sbattn check`: every kernel path of this adapter against the f64 reference
//! (`sbattn::reference::forward`), and the tolerance model every correctness check of the tool
//! uses (the benchmarks' too).
//!
//! # Tolerances
//! Per element, `w` the reference value (tests/forward.rs and tests/decode.rs give the reasons):
//! - forward `o`, f32: `|gpu - w| <= 2e-5 (1 + |w|)`;
//! - forward `o`, f16: plus `2^-11 |w|` (one rounding of `o` to f16; the reference sees the
//!   f16-rounded inputs);
//! - forward `o` on the tensor-core path (on tensor cores or emulated): plus
//!   `(2^-11 + T 2^-25) max|v|` (each weight rounded to f16 before `P V`);
//! - forward with early exit at `eps` (benchmarks only): plus `eps max|v|` on `o`, plus `eps` on
//!   `rem`, and `log rem` is not compared (it only bounds the exact one from above);
//! - `rem` and `log rem` (f32 in both dtypes): `2e-5 (1 + |w|)`;
//! - decode `o`: `2e-5` (f32) or `3e-3` (f16) absolute, the bounds of tests/decode.rs;
//! - NaN or infinity anywhere fails.
//!
//! A case's `err` and `tol` are those of its worst element (largest `err / tol`), so the case
//! passes exactly when `err <= tol`; `max err` in JSON is the largest error of any element.
//!
//! # The sweep
//! Forward: odd sequence lengths and head dims, MHA, GQA and MQA, both layouts, both masks and
//! every remainder mode (rotated over the cases), both dtypes, on every path the adapter has
//! (`Attention::forward_variant` says which), through `Attention::run_host_blocking`. Decode:
//! a prefill appended at once, then steps that append `n` tokens and decode them
//! (`Attention::append`, `Attention::decode`, the query and new keys read in place from the
//! whole sequence's buffers through strided tensors), each step against the reference's rows of
//! those tokens. `--quick` keeps to about 30 small cases.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use sbattn::reference::{self, Rng};
use sbattn::{
    Append, Attention, BufferRef, Decode, DecodeTuning, Dtype, HostInput, HostRemainder,
    KernelPath, KvCache, KvCacheDesc, Layout, Load, Mask, Remainder, Shape, TensorRef, round_to,
    upload, zeroed,
};
use serde::Serialize;

use crate::args::CheckArgs;
use crate::gpu::{ErrorSlot, dtype_name, path_name, read_back};
use crate::report::{AdapterJson, Align, Progress, Table, fmt_err, shape_name};
use crate::{Outcome, Result};

/// Relative half-ulp of f16.
const F16_HALF_ULP: f64 = 1.0 / 2048.0;
/// The f32 term of every forward bound: `2e-5 (1 + |w|)`.
const F32_UNIT: f64 = 2e-5;
/// Decode `o` bounds (tests/decode.rs).
const DECODE_F32_TOL: f64 = 2e-5;
const DECODE_F16_TOL: f64 = 3e-3;

/// A per-element error bound: `|got - w| <= abs + unit (1 + |w|) + rel |w|`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Bound {
    /// Absolute term.
    pub abs: f64,
    /// Term in `1 + |w|`.
    pub unit: f64,
    /// Relative term.
    pub rel: f64,
}

impl Bound {
    /// Forward `o` of `dtype` on `path` (resolved, never `Auto`) over `seq_len` keys, values of
    /// magnitude up to `max_v`, early exit at `eps` (0: off).
    pub fn forward_o(dtype: Dtype, path: KernelPath, seq_len: u32, max_v: f64, eps: f32) -> Bound {
        let mut abs = eps as f64 * max_v;
        if path.is_cooperative() {
            abs += (F16_HALF_ULP + seq_len as f64 * 2f64.powi(-25)) * max_v;
        }
        let rel = if dtype == Dtype::F16 {
            F16_HALF_ULP
        } else {
            0.0
        };
        Bound {
            abs,
            unit: F32_UNIT,
            rel,
        }
    }

    /// `rem` and `log rem` (f32), early exit at `eps` adding `eps` (to `rem`).
    pub fn rows(eps: f32) -> Bound {
        Bound {
            abs: eps as f64,
            unit: F32_UNIT,
            rel: 0.0,
        }
    }

    /// Decode `o` of `dtype`.
    pub fn decode_o(dtype: Dtype) -> Bound {
        let abs = if dtype == Dtype::F16 {
            DECODE_F16_TOL
        } else {
            DECODE_F32_TOL
        };
        Bound {
            abs,
            unit: 0.0,
            rel: 0.0,
        }
    }

    /// The bound at reference value `w`.
    pub fn at(&self, w: f64) -> f64 {
        self.abs + self.unit * (1.0 + w.abs()) + self.rel * w.abs()
    }
}

/// The outcome of comparing results with the reference.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Verdict {
    /// Largest error of any element (infinite for NaN or infinity).
    pub max_abs_err: f64,
    /// Error of the worst element (largest `err / tol`).
    pub err: f64,
    /// Bound of the worst element.
    pub tol: f64,
    /// Every element within its bound, and nothing NaN or infinite.
    pub pass: bool,
}

impl Verdict {
    /// Nothing compared yet.
    pub fn empty() -> Verdict {
        Verdict {
            max_abs_err: 0.0,
            err: 0.0,
            tol: 0.0,
            pass: true,
        }
    }

    fn ratio(&self) -> f64 {
        if self.err == 0.0 {
            0.0
        } else {
            self.err / self.tol
        }
    }

    /// The worse of two verdicts (both must pass): the larger `err / tol`; on a tie (exact
    /// results), the tighter bound.
    pub fn merge(self, other: Verdict) -> Verdict {
        let (a, b) = (self.ratio(), other.ratio());
        let tighter = other.tol > 0.0 && (self.tol == 0.0 || other.tol < self.tol);
        let worst = if b > a || b.is_nan() || (b == a && tighter) {
            other
        } else {
            self
        };
        Verdict {
            max_abs_err: self.max_abs_err.max(other.max_abs_err),
            pass: self.pass && other.pass,
            ..worst
        }
    }
}

/// Compares `got` with `want` element by element under `bound`.
pub fn compare(got: &[f32], want: &[f64], bound: &Bound) -> Verdict {
    if got.len() != want.len() {
        return Verdict {
            max_abs_err: f64::INFINITY,
            err: f64::INFINITY,
            tol: 0.0,
            pass: false,
        };
    }
    let mut v = Verdict::empty();
    for (&g, &w) in got.iter().zip(want) {
        let err = if g.is_finite() && w.is_finite() {
            (g as f64 - w).abs()
        } else {
            f64::INFINITY
        };
        let tol = bound.at(w);
        v = v.merge(Verdict {
            max_abs_err: err,
            err,
            tol,
            pass: err <= tol,
        });
    }
    v
}

/// Largest magnitude of `xs`.
pub fn max_abs(xs: &[f32]) -> f64 {
    xs.iter().fold(0.0f64, |m, x| m.max(x.abs() as f64))
}

/// What to do with the stick left over, on the host side of a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemMode {
    /// Drop it.
    Discard,
    /// Return it.
    Return,
    /// `o += rem v_i`.
    AddToValue,
    /// `o += rem bias_h`.
    AddBias,
}

impl RemMode {
    const ALL: [RemMode; 4] = [
        RemMode::Discard,
        RemMode::Return,
        RemMode::AddToValue,
        RemMode::AddBias,
    ];

    fn name(self) -> &'static str {
        match self {
            RemMode::Discard => "discard",
            RemMode::Return => "return",
            RemMode::AddToValue => "+rem·v",
            RemMode::AddBias => "+rem·bias",
        }
    }

    fn host(self, bias: &[f32]) -> HostRemainder<'_> {
        match self {
            RemMode::Discard => HostRemainder::Discard,
            RemMode::Return => HostRemainder::Return,
            RemMode::AddToValue => HostRemainder::AddToValue,
            RemMode::AddBias => HostRemainder::AddBias(bias),
        }
    }
}

fn mask_name(m: Mask) -> &'static str {
    match m {
        Mask::Strict => "j<i",
        Mask::IncludeCurrent => "j<=i",
    }
}

fn layout_name(l: Layout) -> &'static str {
    match l {
        Layout::Bthd => "bthd",
        Layout::Bhtd => "bhtd",
    }
}

/// One forward case: a problem on a forced path.
#[derive(Clone, Copy, Debug)]
pub struct ForwardCase {
    /// Sizes.
    pub shape: Shape,
    /// Layout of q, k, v, o.
    pub layout: Layout,
    /// Storage type.
    pub dtype: Dtype,
    /// Mask.
    pub mask: Mask,
    /// Remainder handling.
    pub rem: RemMode,
    /// Logit scale (`None`: `1/sqrt(D)`).
    pub scale: Option<f32>,
    /// Forced path.
    pub path: KernelPath,
}

/// Runs a forward case through `run_host_blocking` and compares `o`, `rem` (when returned) and
/// `log rem` with the reference.
///
/// # Errors
/// What the library returns.
pub fn run_forward_case(attn: &Attention, c: &ForwardCase, seed: u64) -> Result<Verdict> {
    let s = c.shape;
    let mut rng = Rng::new(seed);
    let nq = (s.batch() * s.seq_len() * s.heads() * s.head_dim()) as usize;
    let nkv = (s.batch() * s.seq_len() * s.kv_heads() * s.head_dim()) as usize;
    let mut draw = |n: usize| round_to(&rng.normals(n, 1.0), c.dtype);
    let (q, k, v) = (draw(nq), draw(nkv), draw(nkv));
    let bias = draw((s.heads() * s.head_dim()) as usize);
    let input = HostInput::new(s, &q, &k, &v)
        .with_layout(c.layout)
        .with_dtype(c.dtype)
        .with_mask(c.mask)
        .with_scale(c.scale)
        .with_remainder(c.rem.host(&bias))
        .with_path(c.path);
    let want = reference::forward(&input).map_err(|e| format!("reference: {e}"))?;
    let got = attn.run_host_blocking(&input).map_err(|e| e.to_string())?;
    let mut v_all = compare(
        &got.o,
        &want.o,
        &Bound::forward_o(c.dtype, c.path, s.seq_len(), max_abs(&v), 0.0),
    );
    if let Some(rem) = &got.rem {
        v_all = v_all.merge(compare(rem, &want.rem, &Bound::rows(0.0)));
    }
    Ok(v_all.merge(compare(&got.log_rem, &want.log_rem, &Bound::rows(0.0))))
}

/// One decode case: `prefill` tokens appended at once, then `steps` steps that each append
/// `new_tokens` tokens and decode them, every sequence the same length.
#[derive(Clone, Copy, Debug)]
pub struct DecodeCase {
    /// Sequences.
    pub batch: u32,
    /// Query heads.
    pub heads: u32,
    /// Key/value heads.
    pub kv_heads: u32,
    /// Head dim.
    pub head_dim: u32,
    /// Storage type.
    pub dtype: Dtype,
    /// Lane-reduction path.
    pub path: KernelPath,
    /// Tokens appended before the first step.
    pub prefill: u32,
    /// Decode steps.
    pub steps: u32,
    /// Tokens appended and decoded per step.
    pub new_tokens: u32,
    /// Mask.
    pub mask: Mask,
    /// Remainder handling.
    pub rem: RemMode,
    /// Layout of the cache.
    pub layout: Layout,
    /// Forced kernel choices.
    pub tuning: DecodeTuning,
}

impl DecodeCase {
    /// Tokens of each sequence at the end.
    pub fn total(&self) -> u32 {
        self.prefill + self.steps * self.new_tokens
    }

    fn shape(&self) -> Shape {
        Shape::new()
            .with_batch(self.batch)
            .with_seq_len(self.total())
            .with_heads(self.heads)
            .with_kv_heads(self.kv_heads)
            .with_head_dim(self.head_dim)
    }
}

/// Runs a decode case, each step checked against the reference's rows of its tokens (`o`, and
/// `rem` and `log rem` per query, which it always asks for, returning `rem` for
/// [`RemMode::Return`] only as the mode says). Returns the verdict and the plan of the first
/// step.
///
/// # Errors
/// What the library returns.
pub fn run_decode_case(attn: &Attention, c: &DecodeCase, seed: u64) -> Result<(Verdict, String)> {
    let s = c.shape();
    let (b, t, h, hkv, d, n) = (
        c.batch,
        c.total(),
        c.heads,
        c.kv_heads,
        c.head_dim,
        c.new_tokens,
    );
    let mut rng = Rng::new(seed);
    let mut draw = |len: u32| round_to(&rng.normals(len as usize, 1.0), c.dtype);
    let (q, k, v) = (
        draw(b * t * h * d),
        draw(b * t * hkv * d),
        draw(b * t * hkv * d),
    );
    let bias = draw(h * d);
    let input = HostInput::new(s, &q, &k, &v)
        .with_dtype(c.dtype)
        .with_mask(c.mask)
        .with_remainder(c.rem.host(&bias));
    let want = reference::forward(&input).map_err(|e| format!("reference: {e}"))?;
    let dev = attn.device();
    let (qb, kb, vb) = (
        upload(dev, "q", &q, c.dtype),
        upload(dev, "k", &k, c.dtype),
        upload(dev, "v", &v, c.dtype),
    );
    let bias_b = upload(dev, "bias", &bias, c.dtype);
    let mut cache = KvCache::new(
        attn,
        KvCacheDesc::new(b, hkv, d, t, c.dtype).with_layout(c.layout),
    )
    .map_err(|e| e.to_string())?;
    // Whole-sequence [B, T, heads, D] buffers, read in place at each step's first token.
    let at = |buf, heads: u32, token: u32| {
        TensorRef::strided(buf, Layout::Bthd.strides(t, heads, d))
            .at_offset(token as u64 * (heads * d) as u64)
    };
    if c.prefill > 0 {
        let mut enc = dev.create_command_encoder(&Default::default());
        attn.append(
            &mut enc,
            &mut cache,
            &Append::new(at(&kb, hkv, 0), at(&vb, hkv, 0), c.prefill),
        )
        .map_err(|e| e.to_string())?;
        attn.queue().submit([enc.finish()]);
    }
    let rows = (b * h * n) as u64;
    let (o, rem, log_rem) = (
        zeroed(dev, "o", (b * n * h * d) as u64 * c.dtype.size()),
        zeroed(dev, "rem", 4 * rows),
        zeroed(dev, "log rem", 4 * rows),
    );
    let mut verdict = Verdict::empty();
    let mut plan = String::new();
    for step in 0..c.steps {
        let first = c.prefill + step * n;
        let mut enc = dev.create_command_encoder(&Default::default());
        attn.append(
            &mut enc,
            &mut cache,
            &Append::new(at(&kb, hkv, first), at(&vb, hkv, first), n),
        )
        .map_err(|e| e.to_string())?;
        let remainder = match c.rem {
            RemMode::Discard => Remainder::Discard,
            RemMode::Return => Remainder::Return(BufferRef::new(&rem)),
            RemMode::AddToValue => Remainder::AddToValue,
            RemMode::AddBias => Remainder::AddBias(BufferRef::new(&bias_b)),
        };
        let call = Decode::new(&cache, h, n, at(&qb, h, first), TensorRef::bthd(&o))
            .with_mask(c.mask)
            .with_path(c.path)
            .with_tuning(c.tuning)
            .with_remainder(remainder)
            .with_log_rem(BufferRef::new(&log_rem));
        if step == 0 {
            plan = decode_plan_label(&attn.decode_plan(&call).map_err(|e| e.to_string())?);
        }
        attn.decode(&mut enc, &call).map_err(|e| e.to_string())?;
        attn.queue().submit([enc.finish()]);
        let got_o = read_back(attn, &o, (b * n * h * d) as u64 * c.dtype.size(), c.dtype)?;
        let got_lrem = read_back(attn, &log_rem, 4 * rows, Dtype::F32)?;
        // The reference's rows of tokens first..first + n: o is [B, T, H, D], rem [B, H, T].
        let mut want_o = Vec::with_capacity(got_o.len());
        for bi in 0..b {
            let lo = ((bi * t + first) * h * d) as usize;
            want_o.extend_from_slice(&want.o[lo..lo + (n * h * d) as usize]);
        }
        let rows_of = |x: &[f64]| -> Vec<f64> {
            let mut out = Vec::with_capacity(rows as usize);
            for bh in 0..b * h {
                let lo = (bh * t + first) as usize;
                out.extend_from_slice(&x[lo..lo + n as usize]);
            }
            out
        };
        verdict = verdict.merge(compare(&got_o, &want_o, &Bound::decode_o(c.dtype)));
        verdict = verdict.merge(compare(
            &got_lrem,
            &rows_of(&want.log_rem),
            &Bound::rows(0.0),
        ));
        if c.rem == RemMode::Return {
            let got_rem = read_back(attn, &rem, 4 * rows, Dtype::F32)?;
            verdict = verdict.merge(compare(&got_rem, &rows_of(&want.rem), &Bound::rows(0.0)));
        }
    }
    Ok((verdict, plan))
}

/// `subgroup P8 M1 R4 U1 4B s2 rb1`: path, lanes per key, vec4s per lane, rows, keys per step,
/// bytes per load, splits, row blocks.
pub fn decode_plan_label(p: &sbattn::DecodePlan) -> String {
    let v = &p.variant;
    let bytes = v.load.elements() * v.dtype.size() as u32;
    format!(
        "{} P{} M{} R{} U{} {bytes}B s{} rb{}",
        path_name(v.path),
        v.lanes,
        v.cols,
        v.rows,
        v.keys_per_step,
        p.splits,
        p.row_blocks
    )
}

/// One case of the sweep.
#[derive(Clone, Copy, Debug)]
pub enum Case {
    /// A forward case.
    Forward(ForwardCase),
    /// A decode case.
    Decode(DecodeCase),
}

/// Shapes of the forward sweep: `(B, T, H, Hkv, D)`.
type Dims = (u32, u32, u32, u32, u32);

/// Head dims up to 32 only: one head-dim chunk, the variant that compiles fastest (lavapipe takes
/// seconds for it, several times that for more chunks, on two cores); 32 also takes the tensor-core paths.
const QUICK_FORWARD: &[Dims] = &[
    (1, 37, 2, 2, 24),
    (2, 65, 4, 2, 24),
    (1, 100, 4, 1, 17),
    (1, 33, 3, 3, 31),
    (1, 80, 2, 2, 32),
];
const FULL_FORWARD: &[Dims] = &[
    (1, 1, 1, 1, 1),
    (1, 2, 1, 1, 7),
    (2, 37, 3, 3, 16),
    (1, 129, 4, 2, 33),
    (3, 64, 2, 1, 50),
    (1, 300, 2, 2, 64),
    (1, 77, 2, 2, 80),
    (1, 96, 4, 4, 128),
    (1, 50, 2, 1, 200),
    (1, 40, 1, 1, 256),
];

/// Every path of the forward kernel (the emulated tensor-core kernel included: it runs the
/// cooperative-matrix kernel's logic where there are no tensor cores), and the decode paths.
pub const FORWARD_PATHS: [KernelPath; 4] = [
    KernelPath::Subgroup,
    KernelPath::SharedMemory,
    KernelPath::CooperativeMatrix,
    KernelPath::EmulatedCooperativeMatrix,
];
const DECODE_PATHS: [KernelPath; 2] = [KernelPath::Subgroup, KernelPath::SharedMemory];

/// The decode cases (before paths are added): quick ones first, the rest only in the full sweep.
fn decode_templates(quick: bool) -> Vec<DecodeCase> {
    let base = DecodeCase {
        batch: 2,
        heads: 4,
        kv_heads: 2,
        head_dim: 24,
        dtype: Dtype::F32,
        path: KernelPath::Auto,
        prefill: 9,
        steps: 2,
        new_tokens: 1,
        mask: Mask::Strict,
        rem: RemMode::Return,
        layout: Layout::Bhtd,
        tuning: DecodeTuning::default(),
    };
    let mut out = vec![
        // Three chunks per sequence forced: the merge of partial sticks.
        DecodeCase {
            tuning: DecodeTuning::default().with_splits(3),
            ..base
        },
        DecodeCase {
            dtype: Dtype::F16,
            batch: 1,
            heads: 2,
            kv_heads: 1,
            head_dim: 40,
            prefill: 30,
            new_tokens: 2,
            mask: Mask::IncludeCurrent,
            rem: RemMode::AddToValue,
            ..base
        },
        DecodeCase {
            batch: 3,
            heads: 6,
            kv_heads: 3,
            head_dim: 19,
            prefill: 0,
            steps: 3,
            new_tokens: 2,
            mask: Mask::IncludeCurrent,
            rem: RemMode::AddBias,
            layout: Layout::Bthd,
            ..base
        },
    ];
    if !quick {
        out.extend([
            base,
            DecodeCase {
                dtype: Dtype::F16,
                heads: 4,
                kv_heads: 4,
                head_dim: 32,
                prefill: 40,
                steps: 1,
                tuning: DecodeTuning::default().with_splits(3),
                ..base
            },
            DecodeCase {
                dtype: Dtype::F16,
                heads: 32,
                kv_heads: 8,
                head_dim: 128,
                prefill: 200,
                mask: Mask::IncludeCurrent,
                rem: RemMode::Discard,
                ..base
            },
            DecodeCase {
                heads: 2,
                kv_heads: 1,
                head_dim: 256,
                prefill: 50,
                steps: 1,
                new_tokens: 16,
                ..base
            },
            DecodeCase {
                dtype: Dtype::F16,
                batch: 1,
                head_dim: 64,
                prefill: 100,
                tuning: DecodeTuning::default()
                    .with_lanes(16)
                    .with_keys_per_step(4)
                    .with_load(Load::Vec4),
                ..base
            },
            DecodeCase {
                batch: 1,
                heads: 1,
                kv_heads: 1,
                head_dim: 1,
                prefill: 5,
                rem: RemMode::AddToValue,
                ..base
            },
        ]);
    }
    out
}

/// The cases of the sweep on `attn`, and what it cannot run (with the library's reasons).
pub fn cases(attn: &Attention, quick: bool) -> (Vec<Case>, Vec<(String, String)>) {
    let f16 = attn.capabilities().f16();
    let dtypes: Vec<Dtype> = if f16 {
        vec![Dtype::F32, Dtype::F16]
    } else {
        vec![Dtype::F32]
    };
    let mut skipped = Vec::new();
    if !f16 {
        skipped.push(("f16".to_string(), "the device lacks SHADER_F16".to_string()));
    }
    let mut out = Vec::new();
    let mut k = 0usize;
    let dims = if quick { QUICK_FORWARD } else { FULL_FORWARD };
    for (si, &(b, t, h, hkv, d)) in dims.iter().enumerate() {
        let shape = Shape::new()
            .with_batch(b)
            .with_seq_len(t)
            .with_heads(h)
            .with_kv_heads(hkv)
            .with_head_dim(d);
        for &dtype in &dtypes {
            for path in FORWARD_PATHS {
                if let Err(e) = attn.forward_variant(dtype, d, path) {
                    skipped.push((
                        format!("forward {} {} D{d}", dtype_name(dtype), path_name(path)),
                        e.to_string(),
                    ));
                    continue;
                }
                // Masks and remainder modes rotate over the cases; in the full sweep the third
                // shape takes every combination.
                let combos: Vec<(Mask, RemMode)> = if !quick && si == 2 {
                    [Mask::Strict, Mask::IncludeCurrent]
                        .into_iter()
                        .flat_map(|m| RemMode::ALL.map(|r| (m, r)))
                        .collect()
                } else {
                    let c = vec![(
                        [Mask::Strict, Mask::IncludeCurrent][k % 2],
                        RemMode::ALL[(k / 2) % 4],
                    )];
                    k += 1;
                    c
                };
                for (mask, rem) in combos {
                    let layout = if si % 2 == 0 {
                        Layout::Bthd
                    } else {
                        Layout::Bhtd
                    };
                    let scale = (si == 3).then_some(0.5);
                    out.push(Case::Forward(ForwardCase {
                        shape,
                        layout,
                        dtype,
                        mask,
                        rem,
                        scale,
                        path,
                    }));
                }
            }
        }
    }
    for template in decode_templates(quick) {
        if !dtypes.contains(&template.dtype) {
            continue;
        }
        for path in DECODE_PATHS {
            let c = DecodeCase { path, ..template };
            match crate::gpu::plan_decode(attn, &c.plan_desc(), c.heads, path, &c.tuning) {
                Ok(_) => out.push(Case::Decode(c)),
                Err(e) => skipped.push((
                    format!("decode {} {}", dtype_name(c.dtype), path_name(path)),
                    e.to_string(),
                )),
            }
        }
    }
    (out, skipped)
}

impl DecodeCase {
    /// The cache a plan of this case is made on.
    fn plan_desc(&self) -> KvCacheDesc {
        KvCacheDesc::new(
            self.batch,
            self.kv_heads,
            self.head_dim,
            self.total().max(1),
            self.dtype,
        )
        .with_layout(self.layout)
    }
}

/// `what` of a skipped case split into its kind and head dim: `forward f16 coop D24` is
/// (`forward f16 coop`, `D24`).
fn split_dim(what: &str) -> (&str, &str) {
    match what.rsplit_once(' ') {
        Some((kind, d)) if d.starts_with('D') && d[1..].chars().all(|c| c.is_ascii_digit()) => {
            (kind, d)
        }
        _ => (what, ""),
    }
}

/// A reason without the head dims it quotes (`(got 24)`), so that the head dims sharing it
/// share a line.
fn without_dims(why: &str) -> String {
    let mut out = String::new();
    let mut rest = why;
    while let Some(i) = rest.find(" (got ") {
        let tail = &rest[i + 6..];
        let digits = tail.chars().take_while(char::is_ascii_digit).count();
        if digits > 0 && tail[digits..].starts_with(')') {
            out.push_str(&rest[..i]);
            rest = &tail[digits + 1..];
        } else {
            out.push_str(&rest[..i + 6]);
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

/// The skipped cases, one line per kind and reason: `forward f16 coop D17, D24: reason`.
pub fn skip_lines(skipped: &[(String, String)]) -> Vec<String> {
    let mut groups: Vec<(String, String, Vec<String>)> = Vec::new();
    for (what, why) in skipped {
        let (kind, dim) = split_dim(what);
        let why = without_dims(why);
        match groups.iter_mut().find(|(k, w, _)| k == kind && *w == why) {
            Some((_, _, dims)) if dim.is_empty() || dims.iter().any(|d| d == dim) => {}
            Some((_, _, dims)) => dims.push(dim.to_string()),
            None => groups.push((
                kind.to_string(),
                why,
                if dim.is_empty() {
                    vec![]
                } else {
                    vec![dim.to_string()]
                },
            )),
        }
    }
    groups
        .into_iter()
        .map(|(kind, why, dims)| {
            if dims.is_empty() {
                format!("{kind}: {why}")
            } else {
                format!("{kind} {}: {why}", dims.join(", "))
            }
        })
        .collect()
}

/// The table's columns.
const COLUMNS: &[(&str, Align)] = &[
    ("#", Align::Right),
    ("op", Align::Left),
    ("shape BxHxTxD", Align::Left),
    ("dtype", Align::Left),
    ("path", Align::Left),
    ("mask", Align::Left),
    ("remainder", Align::Left),
    ("details", Align::Left),
    ("max err", Align::Right),
    ("tol", Align::Right),
    ("result", Align::Left),
    ("s", Align::Right),
];

/// How one case ended.
#[derive(Clone, Debug)]
enum Ended {
    Pass,
    Fail,
    Error(String),
}

/// A case's table row and how it ended.
type Row = (Vec<String>, Ended);

/// Runs case `i` and makes its table row.
fn run_case(attn: &Attention, errors: &ErrorSlot, i: usize, case: &Case, seed: u64) -> Row {
    let t0 = Instant::now();
    let (op, shape, dtype, path, mask, rem, details, result) = match case {
        Case::Forward(c) => {
            let details = format!(
                "{}{}",
                layout_name(c.layout),
                c.scale.map_or(String::new(), |s| format!(", scale {s}"))
            );
            let r = errors.check(run_forward_case(attn, c, seed));
            (
                "forward",
                shape_name(&c.shape),
                c.dtype,
                c.path,
                c.mask,
                c.rem,
                details,
                r,
            )
        }
        Case::Decode(c) => {
            let r = errors.check(run_decode_case(attn, c, seed));
            let plan = r.as_ref().map_or(String::new(), |(_, p)| p.clone());
            let details = format!(
                "{} + {}x{} tokens, {}; {plan}",
                c.prefill,
                c.steps,
                c.new_tokens,
                layout_name(c.layout)
            );
            (
                "decode",
                shape_name(&c.shape()),
                c.dtype,
                c.path,
                c.mask,
                c.rem,
                details,
                r.map(|(v, _)| v),
            )
        }
    };
    let (err, tol, ended) = match result {
        Ok(v) => (
            fmt_err(v.err),
            fmt_err(v.tol),
            if v.pass { Ended::Pass } else { Ended::Fail },
        ),
        Err(e) => ("-".into(), "-".into(), Ended::Error(e)),
    };
    let verdict = match ended {
        Ended::Pass => "pass",
        Ended::Fail => "FAIL",
        Ended::Error(_) => "ERROR",
    };
    let cells = vec![
        (i + 1).to_string(),
        op.to_string(),
        shape,
        dtype_name(dtype).to_string(),
        path_name(path).to_string(),
        mask_name(mask).to_string(),
        rem.name().to_string(),
        details,
        err,
        tol,
        verdict.to_string(),
        format!("{:.1}", t0.elapsed().as_secs_f64()),
    ];
    (cells, ended)
}

/// Runs `sbattn check`: the cases on as many threads as the host has cores (pipelines compile
/// in parallel; lavapipe spends most of a quick check compiling), rows printed in order.
///
/// # Errors
/// No adapter.
pub fn run(a: &CheckArgs) -> Result<Outcome> {
    let attn = crate::gpu::context(sbattn::ShaderChecks::Trusted)?;
    let errors = ErrorSlot::install(&attn);
    println!("{}", AdapterJson::of(&attn).describe());
    let (cases, skipped) = cases(&attn, a.quick);
    println!(
        "{} cases ({}): forward through run_host_blocking, decode through append + decode, against sbattn::reference::forward\n",
        cases.len(),
        if a.quick { "quick" } else { "full" }
    );
    let table = Table::new(COLUMNS).with_widths(&[2, 7, 14, 5, 8, 4, 9, 30, 7, 7, 6, 5]);
    println!("{}", table.header());
    let progress = Progress::new(cases.len() as u64);
    let (mut passed, mut failed) = (0, 0);
    let t_all = Instant::now();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(cases.len())
        .max(1);
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Option<Row>>> = Mutex::new(vec![None; cases.len()]);
    let ready = Condvar::new();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(case) = cases.get(i) else { break };
                    let row = run_case(
                        &attn,
                        &errors,
                        i,
                        case,
                        a.seed.wrapping_mul(1000).wrapping_add(i as u64),
                    );
                    done.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(row);
                    ready.notify_all();
                }
            });
        }
        for (i, case) in cases.iter().enumerate() {
            progress.set_message(match case {
                Case::Forward(c) => {
                    format!("forward {} {}", shape_name(&c.shape), path_name(c.path))
                }
                Case::Decode(c) => {
                    format!("decode {} {}", shape_name(&c.shape()), path_name(c.path))
                }
            });
            let mut rows = done.lock().unwrap_or_else(|p| p.into_inner());
            while rows[i].is_none() {
                rows = ready.wait(rows).unwrap_or_else(|p| p.into_inner());
            }
            let (cells, ended) = rows[i].take().expect("waited for it");
            drop(rows);
            progress.println(&table.row(&cells));
            match ended {
                Ended::Pass => passed += 1,
                Ended::Fail => failed += 1,
                Ended::Error(e) => {
                    failed += 1;
                    progress.note(&format!("case {}: {e}", i + 1));
                }
            }
            progress.inc();
        }
    });
    progress.finish();
    if !skipped.is_empty() {
        println!("\nnot run on this adapter (the library's reasons):\n");
        for line in skip_lines(&skipped) {
            println!("- {line}");
        }
    }
    println!(
        "\n{} kernels compiled; {:.1} s on {threads} threads",
        attn.compiled_kernels(),
        t_all.elapsed().as_secs_f64()
    );
    println!("check: {passed} passed, {failed} failed");
    Ok(if failed == 0 {
        Outcome::Passed
    } else {
        Outcome::Failed(format!("{failed} of {} cases failed", cases.len()))
    })
}
