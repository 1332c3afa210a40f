#![cfg(not(target_arch = "wasm32"))]
//! Decode against a KV cache (lavapipe in CI): token-by-token decoding equals one forward pass
//! over the whole sequence, any chunking equals no split, ragged batches, capacity, and a typed
//! error for every bad input.
//!
//! Tolerances (absolute, on outputs of magnitude ~1: v ~ N(0, 1), weights sum to at most 1):
//! - f32 storage: `F32_TOL = 2e-5`. The kernel computes in f32; each weight is
//!   `exp(log beta + carry)` where the carry sums up to a few hundred `log(1 - beta)` terms, each
//!   with ~1e-7 relative rounding, and GPU `exp`/`log` are only accurate to a few ulp (WGSL
//!   allows 3 + 2|x| ulp for exp). Observed max errors on lavapipe are <= 7e-7; the bound leaves
//!   room for less accurate drivers while still catching a single dropped or doubled key of
//!   weight above 2e-5 (indexing and masking bugs give errors of order 0.01 to 1).
//! - f16 storage: `F16_TOL = 3e-3`. The reference sees the same f16-rounded inputs, so the
//!   extra error is the final rounding of `o` to f16 (half an ulp: 2^-11 relative, <= 1e-3 for
//!   |o| < 2; observed <= 9.7e-4) plus the f32 error above.
//! - rem and log_rem are f32 in both cases: `F32_TOL` (log_rem relative to max(1, |log_rem|)).
//! - Split against unsplit: only the order of f32 sums differs, `1e-5`.

mod common;

use common::{buffer, compare, read, read_u32, tweak, zeros, Rem, Rng};
use sbattn::{
    reference, round_to, Append, Attention, BufferRef, CacheTensor, Decode, DecodePlan, Dtype, Error, HostInput,
    HostRemainder, KernelPath, KvCache, KvCacheDesc, Layout, Load, Mask, Remainder, ShaderChecks, Shape, Strides, TensorRef, NO_PAGE,
};

const F32_TOL: f64 = 2e-5;
const F16_TOL: f64 = 3e-3;
const SPLIT_TOL: f64 = 1e-5;

/// The shared context compiling with `checks` (the default one for `Trusted`).
fn with_checks(attn: &'static Attention, checks: ShaderChecks) -> &'static Attention {
    use std::sync::OnceLock;
    static OTHERS: [OnceLock<Attention>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let fresh = || Attention::with_default_adapter_blocking().expect("second context");
    match checks {
        ShaderChecks::Full => OTHERS[0].get_or_init(|| fresh().with_full_runtime_checks()),
        // SAFETY: every call is validated on the host; this is what the tests check.
        ShaderChecks::Off => OTHERS[1].get_or_init(|| unsafe { fresh().without_runtime_checks() }),
        ShaderChecks::Bounds => OTHERS[2].get_or_init(|| fresh().with_index_clamping()),
        _ => attn,
    }
}

fn tol(dtype: Dtype) -> f64 {
    if dtype == Dtype::F16 { F16_TOL } else { F32_TOL }
}

/// A decode scenario: each sequence `b` first gets `prefill[b]` tokens appended in one ragged
/// append (no queries), then every step appends `n` tokens to every sequence and decodes them.
#[derive(Clone, Debug)]
struct Case {
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    dtype: Dtype,
    mask: Mask,
    prefill: Vec<u32>,
    steps: Vec<u32>,
    path: KernelPath,
    splits: Option<u32>,
    lanes: Option<u32>,
    load: Option<Load>,
    keys_per_step: Option<u32>,
    checks: ShaderChecks,
    rem: Rem,
    eps: f32,
    cache_layout: Layout,
    /// Page size of a paged cache (pages shuffled over a pool with spare pages); `None`:
    /// contiguous.
    pages: Option<u32>,
    /// Extra tokens of capacity beyond what the case appends.
    spare: u32,
    scale: Option<f32>,
    seed: u64,
    /// Standard deviation of q and k (large values give saturated logits).
    qk_std: f32,
}

impl Case {
    fn new(batch: u32, heads: u32, kv_heads: u32, head_dim: u32, dtype: Dtype, mask: Mask) -> Self {
        Case {
            heads,
            kv_heads,
            head_dim,
            dtype,
            mask,
            prefill: vec![0; batch as usize],
            steps: vec![1; 8],
            path: KernelPath::Auto,
            splits: None,
            lanes: None,
            load: None,
            keys_per_step: None,
            checks: ShaderChecks::Trusted,
            rem: Rem::Return,
            eps: 0.0,
            cache_layout: Layout::Bhtd,
            pages: None,
            spare: 0,
            scale: None,
            seed: 1,
            qk_std: 1.0,
        }
    }
    fn batch(&self) -> u32 {
        self.prefill.len() as u32
    }
    fn decoded(&self) -> u32 {
        self.steps.iter().sum()
    }
    fn total(&self, b: usize) -> u32 {
        self.prefill[b] + self.decoded()
    }
    fn capacity(&self) -> u32 {
        (0..self.prefill.len()).map(|b| self.total(b)).max().unwrap_or(0) + self.spare
    }
}

/// Decoded rows of every sequence: `o` as `[B, decoded, H, D]`, `rem`/`log_rem` as
/// `[B, H, decoded]`.
struct Outputs {
    o: Vec<f32>,
    rem: Vec<f32>,
    log_rem: Vec<f32>,
    plans: Vec<DecodePlan>,
    lengths: Vec<u32>,
}

/// Host data of one sequence, `[T, heads, D]`.
struct Seq {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

fn sequences(case: &Case) -> (Vec<Seq>, Vec<f32>) {
    let mut rng = Rng::new(case.seed);
    let (h, hk, d) = (case.heads as usize, case.kv_heads as usize, case.head_dim as usize);
    let seqs = (0..case.batch() as usize)
        .map(|b| {
            let t = case.total(b) as usize;
            Seq {
                q: round_to(&rng.normals(t * h * d, case.qk_std), case.dtype),
                k: round_to(&rng.normals(t * hk * d, case.qk_std), case.dtype),
                v: round_to(&rng.normals(t * hk * d, 1.0), case.dtype),
            }
        })
        .collect();
    let bias = round_to(&rng.normals(h * d, 1.0), case.dtype);
    (seqs, bias)
}

/// Packs rows `from .. from + len` of every sequence (`heads` heads) into `[B, len, heads, D]`,
/// zero where a sequence has fewer rows.
fn pack(seqs: &[Seq], pick: impl Fn(&Seq) -> &Vec<f32>, from: &[u32], len: u32, heads: u32, d: u32) -> Vec<f32> {
    let row = (heads * d) as usize;
    let mut out = vec![0.0; seqs.len() * len as usize * row];
    for (b, s) in seqs.iter().enumerate() {
        let data = pick(s);
        for t in 0..len as usize {
            let src = (from[b] as usize + t) * row;
            if src + row <= data.len() {
                let dst = (b * len as usize + t) * row;
                out[dst..dst + row].copy_from_slice(&data[src..src + row]);
            }
        }
    }
    out
}

/// A cache for `case`, `[B, Hkv, capacity, D]` or `[B, capacity, Hkv, D]`; paged, pools of
/// `[pages, Hkv, page_size, D]` or `[pages, page_size, Hkv, D]` with three spare pages.
fn make_cache(attn: &Attention, case: &Case) -> KvCache {
    let mut desc = KvCacheDesc::new(case.batch(), case.kv_heads, case.head_dim, case.capacity(), case.dtype);
    if let Some(size) = case.pages {
        desc = desc.with_pages(size, case.batch() * case.capacity().div_ceil(size) + 3);
    }
    let mut cache = KvCache::new(attn, desc.with_layout(case.cache_layout)).expect("cache");
    if case.pages.is_some() {
        common::shuffle_pages(attn, &mut cache, case.seed);
    }
    cache
}

/// Runs `case` on the GPU: one encoder, one submit.
fn run(attn: &'static Attention, case: &Case, seqs: &[Seq], bias: &[f32]) -> Result<Outputs, Error> {
    let attn = with_checks(attn, case.checks);
    let (bsz, h, hk, d, dt) = (case.batch(), case.heads, case.kv_heads, case.head_dim, case.dtype);
    let mut cache = make_cache(attn, case);
    let mut encoder = attn.device().create_command_encoder(&Default::default());
    let zero = vec![0u32; bsz as usize];
    let pmax = case.prefill.iter().copied().max().unwrap_or(0);
    let (kp, vp);
    if pmax > 0 {
        kp = buffer(attn, &pack(seqs, |s| &s.k, &zero, pmax, hk, d), dt);
        vp = buffer(attn, &pack(seqs, |s| &s.v, &zero, pmax, hk, d), dt);
        let app = Append::new(TensorRef::bthd(&kp), TensorRef::bthd(&vp), pmax).with_counts(&case.prefill);
        attn.append(&mut encoder, &mut cache, &app)?;
    }
    let nd = case.decoded();
    let qd = buffer(attn, &pack(seqs, |s| &s.q, &case.prefill, nd, h, d), dt);
    let kd = buffer(attn, &pack(seqs, |s| &s.k, &case.prefill, nd, hk, d), dt);
    let vd = buffer(attn, &pack(seqs, |s| &s.v, &case.prefill, nd, hk, d), dt);
    let o_len = (bsz * nd * h * d) as u64;
    let od = zeros(attn, o_len * dt.size());
    let rows = (bsz * h * nd) as u64;
    let remd = zeros(attn, rows * 4);
    let lremd = zeros(attn, rows * 4);
    let biasb = buffer(attn, bias, dt);
    let mut plans = Vec::new();
    let mut t0 = 0u32;
    for &n in &case.steps {
        let at = |heads: u32| (t0 * heads * d) as u64;
        // Step slices of [B, decoded, heads, D] tensors.
        let slice = |buf, heads| TensorRef::strided(buf, Layout::Bthd.strides(nd, heads, d)).at_offset(at(heads));
        let kv = |buf| slice(buf, hk);
        attn.append(&mut encoder, &mut cache, &Append::new(kv(&kd), kv(&vd), n))?;
        let mut call = Decode::new(
            &cache,
            h,
            n,
            slice(&qd, h),
            slice(&od, h),
        );
        let region = (bsz * h * t0) as u64; // rem of this step: [B, H, n] after earlier steps'
        call.mask = case.mask;
        call.scale = case.scale;
        call.path = case.path;
        call.tuning.splits = case.splits;
        call.tuning.lanes = case.lanes;
        call.tuning.load = case.load;
        call.tuning.keys_per_step = case.keys_per_step;
        call.early_exit_eps = case.eps;
        call.log_rem = Some(BufferRef::new(&lremd).at_offset(region));
        call.remainder = match case.rem {
            Rem::Discard => Remainder::Discard,
            Rem::Return => Remainder::Return(BufferRef::new(&remd).at_offset(region)),
            Rem::AddToValue => Remainder::AddToValue,
            Rem::AddBias => Remainder::AddBias(BufferRef::new(&biasb)),
        };
        plans.push(attn.decode_plan(&call)?);
        attn.decode(&mut encoder, &call)?;
        t0 += n;
    }
    let lengths = cache.lengths_buffer().clone();
    let out = read(
        attn,
        encoder,
        &[(&od, o_len * dt.size(), dt), (&remd, rows * 4, Dtype::F32), (&lremd, rows * 4, Dtype::F32), (&lengths, bsz as u64 * 4, Dtype::F32)],
    );
    // Per-step [B, H, n] regions back to [B, H, decoded].
    let unstep = |x: &[f32]| {
        let mut y = vec![0.0; x.len()];
        let mut t0 = 0u32;
        for &n in &case.steps {
            for b in 0..bsz {
                for hh in 0..h {
                    for i in 0..n {
                        let src = (bsz * h * t0 + (b * h + hh) * n + i) as usize;
                        y[((b * h + hh) * nd + t0 + i) as usize] = x[src];
                    }
                }
            }
            t0 += n;
        }
        y
    };
    let lengths = out[3].iter().map(|x| x.to_bits()).collect();
    Ok(Outputs { o: out[0].clone(), rem: unstep(&out[1]), log_rem: unstep(&out[2]), plans, lengths })
}

/// The reference rows the decode steps produce, in the layout of [`Outputs`].
fn expected(case: &Case, seqs: &[Seq], bias: &[f32]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (h, d, nd) = (case.heads as usize, case.head_dim as usize, case.decoded() as usize);
    let (mut o, mut rem, mut lrem) = (Vec::new(), Vec::new(), Vec::new());
    for (b, s) in seqs.iter().enumerate() {
        let t = case.total(b);
        let shape = Shape::new().with_batch(1).with_seq_len(t).with_heads(case.heads).with_head_dim(case.head_dim).with_kv_heads(case.kv_heads);
        let remainder = match case.rem {
            Rem::AddToValue => HostRemainder::AddToValue,
            Rem::AddBias => HostRemainder::AddBias(bias),
            _ => HostRemainder::Return,
        };
        let input = HostInput::new(shape, &s.q, &s.k, &s.v).with_mask(case.mask).with_scale(case.scale).with_remainder(remainder);
        let r = reference::forward(&input).expect("reference");
        let p = case.prefill[b] as usize;
        o.extend_from_slice(&r.o[p * h * d..(p + nd) * h * d]);
        for hh in 0..h {
            let row = hh * t as usize + p;
            rem.extend_from_slice(&r.rem[row..row + nd]);
            lrem.extend_from_slice(&r.log_rem[row..row + nd]);
        }
    }
    (o, rem, lrem)
}

/// Runs `case` and checks it against the reference; returns the outputs.
fn check(attn: &'static Attention, case: &Case) -> Outputs {
    let (seqs, bias) = sequences(case);
    let out = run(attn, case, &seqs, &bias).unwrap_or_else(|e| panic!("{case:?}: {e}"));
    let (o, rem, lrem) = expected(case, &seqs, &bias);
    let eo = compare("o", &out.o, &o);
    assert!(eo.max_abs <= tol(case.dtype), "{case:?}\no: {eo:?} plans {:?}", out.plans[0]);
    if case.rem == Rem::Return {
        let er = compare("rem", &out.rem, &rem);
        assert!(er.max_abs <= F32_TOL, "{case:?}\nrem: {er:?}");
    }
    let el = lrem.iter().zip(&out.log_rem).map(|(w, g)| (*g as f64 - w).abs() / w.abs().max(1.0)).fold(0.0, f64::max);
    assert!(el <= F32_TOL, "{case:?}\nlog_rem rel err {el}");
    let want: Vec<u32> = (0..seqs.len()).map(|b| case.total(b)).collect();
    assert_eq!(out.lengths, want, "GPU lengths");
    eprintln!("{:?} {:?} {:?}: o {:.1e} ({:?})", case.dtype, case.mask, case.rem, eo.max_abs, out.plans[0]);
    out
}

#[test]
fn token_by_token_matches_forward_gqa() {
    let attn = gpu_or_skip!();
    for dtype in [Dtype::F32, Dtype::F16] {
        for mask in [Mask::Strict, Mask::IncludeCurrent] {
            let mut case = Case::new(2, 4, 2, 40, dtype, mask);
            case.steps = vec![1; 13];
            check(attn, &case);
        }
    }
}

/// Several new tokens per step (speculative decoding), multi-query: up to 4 x 16 query rows
/// per kv head, so several row blocks on the subgroup path.
#[test]
fn multi_token_steps_mqa() {
    let attn = gpu_or_skip!();
    let mut case = Case::new(2, 4, 1, 40, Dtype::F32, Mask::IncludeCurrent);
    case.steps = vec![3, 1, 16];
    let out = check(attn, &case);
    // 64 rows need several row blocks on any path of this adapter.
    assert!(out.plans.iter().any(|p| p.row_blocks > 1), "{:?}", out.plans);
    for p in &out.plans {
        eprintln!("{p:?}");
    }
}

/// Any chunking of a long cache equals the unsplit result (and the reference).
#[test]
fn any_chunking_equals_no_split() {
    let attn = gpu_or_skip!();
    let mut base = Case::new(2, 4, 2, 40, Dtype::F32, Mask::Strict);
    base.prefill = vec![300, 300];
    base.steps = vec![1, 2];
    base.splits = Some(1);
    let whole = check(attn, &base);
    // 3 and 7 do not divide the 300-odd keys; 64 leaves a few keys per chunk; 400 is more
    // chunks than keys, so some chunks are empty.
    for splits in [None, Some(2), Some(3), Some(7), Some(64), Some(400)] {
        let case = Case { splits, ..base.clone() };
        let out = check(attn, &case);
        let want: Vec<f64> = whole.o.iter().map(|x| *x as f64).collect();
        let e = compare("split vs unsplit", &out.o, &want);
        assert!(e.max_abs <= SPLIT_TOL, "splits {splits:?}: {e:?}");
        let want: Vec<f64> = whole.rem.iter().map(|x| *x as f64).collect();
        let e = compare("split vs unsplit rem", &out.rem, &want);
        assert!(e.max_abs <= SPLIT_TOL, "splits {splits:?}: {e:?}");
        if let Some(s) = splits {
            assert!(out.plans.iter().all(|p| p.splits == s));
        }
    }
}

/// Sequences of different lengths in one batch (a ragged prefill append, including an empty
/// sequence whose first query sees no key), and a `[B, T, Hkv, D]` cache.
#[test]
fn ragged_batch() {
    let attn = gpu_or_skip!();
    for (dtype, mask, layout, steps) in [
        (Dtype::F32, Mask::Strict, Layout::Bthd, vec![1, 2, 1]),
        (Dtype::F16, Mask::IncludeCurrent, Layout::Bhtd, vec![1, 1]),
    ] {
        let mut case = Case::new(4, 4, 2, 40, dtype, mask);
        case.prefill = vec![0, 37, 5, 120];
        case.steps = steps;
        case.splits = Some(3);
        case.cache_layout = layout;
        check(attn, &case);
    }
}

/// A paged cache (pages of 16 and 256 tokens, shuffled over a pool with spare pages, both
/// page layouts) gives the contiguous cache's results bit for bit (the same kernels, the same
/// order of operations: only the addresses differ), and the reference's: a ragged prefill
/// append (an empty sequence included), steps of 1 to 16 tokens, forced splits, every load
/// width, both masks, the remainder modes that read the cache.
#[test]
fn paged_cache_matches_contiguous() {
    let attn = gpu_or_skip!();
    let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    for (i, (size, dtype, layout, load, rem)) in [
        (16, Dtype::F16, Layout::Bthd, Some(Load::Vec8), Rem::AddToValue),
        (16, Dtype::F32, Layout::Bhtd, Some(Load::Scalar), Rem::Return),
        (256, Dtype::F16, Layout::Bhtd, None, Rem::Return),
        (256, Dtype::F32, Layout::Bthd, Some(Load::Vec4), Rem::AddToValue),
    ]
    .into_iter()
    .enumerate()
    {
        let mask = if i % 2 == 0 { Mask::Strict } else { Mask::IncludeCurrent };
        let mut case = Case::new(3, 4, 2, 40, dtype, mask);
        case.prefill = vec![37, 300, 0];
        case.steps = vec![1, 4, 16, 1];
        (case.load, case.cache_layout, case.rem, case.seed) = (load, layout, rem, 40 + i as u64);
        case.splits = (i % 2 == 1).then_some(5);
        let contiguous = check(attn, &case);
        let paged = check(attn, &Case { pages: Some(size), ..case.clone() });
        assert_eq!(paged.plans, contiguous.plans, "page size {size}");
        assert!(bits(&paged.o) == bits(&contiguous.o), "page size {size} {case:?}: o differs from the contiguous cache's");
        assert!(bits(&paged.log_rem) == bits(&contiguous.log_rem), "page size {size}: log rem differs");
    }
}

/// Two sequences share their first two pages (a common prompt prefix written once): decoding
/// both gives each one's reference rows; appending into a shared page is refused.
#[test]
fn shared_prefix_pages() {
    let attn = gpu_or_skip!();
    let (h, hk, d, ps) = (4u32, 2u32, 32usize, 16u32);
    let (hd, kd) = (h as usize * d, hk as usize * d);
    let mut rng = Rng::new(77);
    // Sequence 0: 40 prompt tokens, then one decoded; sequence 1: sequence 0's first 32, then
    // 5 of its own, then one decoded.
    let q0 = rng.normals(41 * hd, 1.0);
    let (k0, v0) = (rng.normals(41 * kd, 1.0), rng.normals(41 * kd, 1.0));
    let q1 = rng.normals(38 * hd, 1.0);
    let own = |x: &[f32], r: &mut Rng| [&x[..32 * kd], &r.normals(6 * kd, 1.0)[..]].concat();
    let (k1, v1) = (own(&k0, &mut rng), own(&v0, &mut rng));
    let desc = KvCacheDesc::new(2, hk, d as u32, 64, Dtype::F32).with_pages(ps, 8);
    let mut cache = KvCache::new(attn, desc).expect("cache");
    let mut enc = attn.device().create_command_encoder(&Default::default());
    cache.set_pages(attn, &mut enc, 0, &[5, 2, 7]).unwrap();
    // [2, 40, Hkv, D]: sequence 0's prompt, nothing for sequence 1.
    let prompt = |x: &[f32]| buffer(attn, &[&x[..40 * kd], &vec![0.0; 40 * kd][..]].concat(), Dtype::F32);
    let (kp, vp) = (prompt(&k0), prompt(&v0));
    attn.append(&mut enc, &mut cache, &Append::new(TensorRef::bthd(&kp), TensorRef::bthd(&vp), 40).with_counts(&[40, 0])).unwrap();
    // Sequence 1 takes pages 5 and 2 as they are (32 tokens) and a page of its own.
    cache.set_pages(attn, &mut enc, 1, &[5, 2, 0]).unwrap();
    cache.set_lengths(attn, &mut enc, &[40, 32]).unwrap();
    // [2, 5, Hkv, D]: nothing for sequence 0, five tokens for sequence 1.
    let rest = |x: &[f32]| buffer(attn, &[&vec![0.0; 5 * kd][..], &x[32 * kd..37 * kd]].concat(), Dtype::F32);
    let (kr, vr) = (rest(&k1), rest(&v1));
    attn.append(&mut enc, &mut cache, &Append::new(TensorRef::bthd(&kr), TensorRef::bthd(&vr), 5).with_counts(&[0, 5])).unwrap();
    assert_eq!(cache.lengths(), &[40, 37]);
    // One decode step for both.
    let step = |x0: &[f32], x1: &[f32], w: usize| buffer(attn, &[&x0[40 * w..41 * w], &x1[37 * w..38 * w]].concat(), Dtype::F32);
    let (qs, ks, vs) = (step(&q0, &q1, hd), step(&k0, &k1, kd), step(&v0, &v1, kd));
    attn.append(&mut enc, &mut cache, &Append::new(TensorRef::bthd(&ks), TensorRef::bthd(&vs), 1)).unwrap();
    let o = zeros(attn, 4 * 2 * hd as u64);
    attn.decode(&mut enc, &Decode::new(&cache, h, 1, TensorRef::bthd(&qs), TensorRef::bthd(&o))).unwrap();
    let got = read(attn, enc, &[(&o, 4 * 2 * hd as u64, Dtype::F32)]).remove(0);
    let mut want = Vec::new();
    for (q, k, v, t) in [(&q0, &k0, &v0, 41u32), (&q1, &k1, &v1, 38)] {
        let shape = Shape::new().with_seq_len(t).with_heads(h).with_kv_heads(hk).with_head_dim(d as u32);
        let r = reference::forward(&HostInput::new(shape, q, k, v)).unwrap();
        want.extend_from_slice(&r.o[(t as usize - 1) * hd..]);
    }
    let e = compare("shared prefix", &got, &want);
    assert!(e.max_abs <= F32_TOL, "{e:?}");
    // Sequence 0 rewound into page 2, which sequence 1 reads too: no append there.
    let mut enc = attn.device().create_command_encoder(&Default::default());
    cache.set_lengths(attn, &mut enc, &[30, 38]).unwrap();
    let err = attn.append(&mut enc, &mut cache, &Append::new(TensorRef::bthd(&ks), TensorRef::bthd(&vs), 1).with_counts(&[1, 0]));
    assert!(matches!(err, Err(Error::InvalidParameter { name: "pages", .. })), "{err:?}");
}

/// Every bad page setting is an error before anything is recorded.
#[test]
fn bad_page_tables_are_errors() {
    let attn = gpu_or_skip!();
    let desc = |size| KvCacheDesc::new(2, 1, 8, 40, Dtype::F32).with_pages(size, 6);
    for size in [0, 8, 24, 512] {
        let e = KvCache::new(attn, desc(size)).unwrap_err();
        assert!(matches!(e, Error::InvalidParameter { name: "page_size", .. }), "{size}: {e:?}");
    }
    assert!(matches!(KvCache::new(attn, KvCacheDesc::new(2, 1, 8, 40, Dtype::F32).with_pages(16, 0)), Err(Error::Shape(_))));
    let mut cache = KvCache::new(attn, desc(16)).unwrap();
    assert_eq!(cache.desc().max_pages(), 3);
    let mut enc = attn.device().create_command_encoder(&Default::default());
    let pages = |e: Result<(), Error>| matches!(e, Err(Error::InvalidParameter { name: "pages", .. }));
    assert!(pages(cache.set_pages(attn, &mut enc, 2, &[0])), "sequence past the batch");
    assert!(pages(cache.set_pages(attn, &mut enc, 0, &[0, 1, 2, 3])), "more pages than a sequence has");
    assert!(pages(cache.set_pages(attn, &mut enc, 0, &[0, 6])), "a page past the pool");
    assert!(matches!(cache.set_lengths(attn, &mut enc, &[1, 0]), Err(Error::InvalidParameter { name: "lengths", .. })), "tokens on no page");
    let k = zeros(attn, 4 * 2 * 20 * 8);
    let app = |n| Append::new(TensorRef::bthd(&k), TensorRef::bthd(&k), n);
    assert!(pages(attn.append(&mut enc, &mut cache, &app(1))), "append to unset pages");
    cache.set_pages(attn, &mut enc, 0, &[4]).unwrap();
    cache.set_pages(attn, &mut enc, 1, &[5, 0]).unwrap();
    assert!(pages(attn.append(&mut enc, &mut cache, &app(17))), "append past sequence 0's pages");
    attn.append(&mut enc, &mut cache, &app(16)).unwrap();
    assert!(pages(cache.set_pages(attn, &mut enc, 1, &[])), "too few pages for the tokens held");
    assert!(pages(cache.set_pages(attn, &mut enc, 0, &[4]).and_then(|_| attn.append(&mut enc, &mut cache, &app(1)).map(|_| ()))));
    assert_eq!(cache.lengths(), &[16, 16], "failed calls must not move the mirror");
    assert_eq!(cache.page_table().unwrap(), &[4, NO_PAGE, NO_PAGE, 5, 0, NO_PAGE]);
    let mut flat = KvCache::new(attn, KvCacheDesc::new(2, 1, 8, 40, Dtype::F32)).unwrap();
    assert!(matches!(flat.set_pages(attn, &mut enc, 0, &[0]), Err(Error::Unsupported(_))));
    assert!(flat.page_table().is_none());
}

/// A block table (and lengths) overwritten on the GPU behind the cache's back with anything:
/// every page index is clamped to the pool, so appends write only the pool's last page and
/// decode reads stay in the pool. Nothing fails on the device.
#[test]
fn garbage_gpu_table_is_clamped() {
    let attn = gpu_or_skip!();
    let (hk, d, ps, pool) = (1u32, 8u32, 16u32, 4u32);
    let mut cache = KvCache::new(attn, KvCacheDesc::new(2, hk, d, 48, Dtype::F32).with_pages(ps, pool)).unwrap();
    let mut enc = attn.device().create_command_encoder(&Default::default());
    cache.set_pages(attn, &mut enc, 0, &[0, 1]).unwrap();
    cache.set_pages(attn, &mut enc, 1, &[2]).unwrap();
    attn.queue().submit([enc.finish()]);
    // Lengths [3, u32::MAX], then table rows of huge and past-the-pool entries.
    let garbage: Vec<u32> = vec![3, u32::MAX, u32::MAX, pool, 1 << 30, 7, u32::MAX - 1, 5];
    attn.queue().write_buffer(cache.lengths_buffer(), 0, bytemuck::cast_slice(&garbage));
    let ones = buffer(attn, &vec![1.0; 2 * 2 * (hk * d) as usize], Dtype::F32);
    let mut enc = attn.device().create_command_encoder(&Default::default());
    attn.append(&mut enc, &mut cache, &Append::new(TensorRef::bthd(&ones), TensorRef::bthd(&ones), 2)).unwrap();
    let q = buffer(attn, &vec![0.5; 2 * 2 * (hk * d) as usize], Dtype::F32);
    let o = zeros(attn, 4 * 2 * 2 * (hk * d) as u64);
    attn.decode(&mut enc, &Decode::new(&cache, hk, 2, TensorRef::bthd(&q), TensorRef::bthd(&o))).unwrap();
    let bytes = cache.desc().tensor_bytes();
    let out = read(attn, enc, &[(cache.k().buffer, bytes, Dtype::F32), (&o, 4 * 2 * 2 * (hk * d) as u64, Dtype::F32)]);
    let page = (ps * hk * d) as usize;
    assert!(out[0][..3 * page].iter().all(|&x| x == 0.0), "pages 0 to 2 written through a garbage table");
    assert!(out[0][3 * page..].contains(&1.0), "the appends went to the last page");
    assert!(out[1].iter().all(|x| x.is_finite()), "decode output {:?}", out[1]);
}

/// A head dim that is not a multiple of 4 takes the scalar loads; the largest head dim.
#[test]
fn odd_and_largest_head_dims() {
    let attn = gpu_or_skip!();
    let case = Case { prefill: vec![70], steps: vec![2, 2], ..Case::new(1, 3, 3, 50, Dtype::F32, Mask::Strict) };
    let out = check(attn, &case);
    assert_eq!(out.plans[0].variant.load, Load::Scalar);
    // The largest head dim: 8 vec4s per lane at 8 lanes.
    check(attn, &Case { head_dim: 256, dtype: Dtype::F16, ..case });
}

/// Forced kernels: every load width, several lane counts and keys per step, on lengths that
/// leave key slots empty, shorter than one step, or ending part way through a step; each
/// matches the reference and runs as forced. Lane counts above the adapter's subgroups run on
/// the shared-memory path.
#[test]
fn forced_variants_match_reference() {
    let attn = gpu_or_skip!();
    // (dtype, load, lanes, keys per step, path)
    let variants = [
        (Dtype::F16, Load::Vec8, 8, 8, KernelPath::Auto),
        (Dtype::F16, Load::Vec8, 16, 2, KernelPath::SharedMemory),
        (Dtype::F16, Load::Vec4, 8, 4, KernelPath::Auto),
        (Dtype::F16, Load::Scalar, 8, 2, KernelPath::Auto),
        (Dtype::F32, Load::Vec4, 32, 4, KernelPath::SharedMemory),
    ];
    for (dtype, load, lanes, keys, path) in variants {
        let mut case = Case::new(2, 4, 2, 40, dtype, Mask::IncludeCurrent);
        // 301 keys over 8 to 32 slots: 10 to 38 keys each, not multiples of the step; the
        // second sequence's 39 keys leave slots empty or with one or two keys.
        case.prefill = vec![300, 37];
        case.steps = vec![1, 1];
        (case.load, case.lanes, case.keys_per_step, case.path) = (Some(load), Some(lanes), Some(keys), path);
        for splits in [Some(1), Some(3)] {
            let out = check(attn, &Case { splits, ..case.clone() });
            let v = out.plans[0].variant;
            assert_eq!((v.load, v.lanes, v.keys_per_step), (load, lanes, keys), "{case:?}");
        }
    }
}

/// Kernels compiled with every wgpu runtime check (loop bounding too) and with none compute
/// what the default (index clamping) does.
#[test]
fn shader_check_modes() {
    let attn = gpu_or_skip!();
    for checks in [ShaderChecks::Full, ShaderChecks::Bounds, ShaderChecks::Off] {
        let base = Case::new(2, 4, 2, 40, Dtype::F16, Mask::Strict);
        check(attn, &Case { prefill: vec![50, 9], steps: vec![1, 1], keys_per_step: Some(4), checks, ..base });
    }
}

/// What the choosers give a large GPU (an H200's adapter: subgroups of 32, f16, 48 KiB of
/// workgroup memory) at the benchmark's shape, H = 32, Hkv = 8, D = 128, one new token: the
/// query group in one block, 16-byte loads, 16 lanes, 4 keys per step; and the splits.
#[test]
fn choices_for_a_large_gpu() {
    use sbattn::ops::decode::plan::{choose_splits, choose_variant};
    use sbattn::{Capabilities, DecodeTuning, DecodeVariant};
    let limits = wgpu::Limits { max_compute_workgroup_storage_size: 48 << 10, ..Default::default() };
    let mut caps = Capabilities::plain(wgpu::Features::SUBGROUP | wgpu::Features::SHADER_F16, limits, 32);
    caps.device_type = wgpu::DeviceType::DiscreteGpu;
    let v = choose_variant(&caps, Dtype::F16, 128, 4, Load::Vec8, KernelPath::Auto, &DecodeTuning::default()).expect("variant");
    let want = DecodeVariant { dtype: Dtype::F16, path: KernelPath::Subgroup, load: Load::Vec8, lanes: 16, cols: 2, rows: 4, keys_per_step: 4 };
    assert_eq!(v, want);
    // Only 8-byte loads allowed (a cache stride of 4 elements): the same layout in two loads
    // per row and lane (8 lanes would hold 16 accumulators).
    let v4 = choose_variant(&caps, Dtype::F16, 128, 4, Load::Vec4, KernelPath::Auto, &DecodeTuning::default()).expect("variant");
    assert_eq!(v4, DecodeVariant { load: Load::Vec4, ..want });
    // (batch, cache length, splits): 1024 workgroups where the keys allow, at least 4 steps
    // of 4 keys per slot (256 keys per workgroup), at most 32 chunks.
    for (b, len, splits) in [(1, 4096, 16), (1, 32768, 32), (1, 131072, 32), (8, 4096, 16), (8, 131072, 16), (32, 131072, 4)] {
        assert_eq!(choose_splits(&caps, b * 8, len, &v), splits, "B {b} L {len}");
    }
    // Decode has no tensor-core kernel: forcing it is an error, not a silent fallback.
    let e = choose_variant(&caps, Dtype::F16, 128, 4, Load::Vec8, KernelPath::CooperativeMatrix, &DecodeTuning::default());
    assert!(matches!(e, Err(Error::Unsupported(_))), "{e:?}");
}

#[test]
fn remainder_modes() {
    let attn = gpu_or_skip!();
    for rem in [Rem::Discard, Rem::AddToValue, Rem::AddBias] {
        let base = Case::new(2, 4, 2, 40, Dtype::F32, Mask::Strict);
        check(attn, &Case { prefill: vec![9, 20], steps: vec![1, 2], rem, scale: Some(0.3), ..base });
    }
}

/// Logits of +-1e4 stay finite and match the reference.
#[test]
fn huge_logits_stay_finite() {
    let attn = gpu_or_skip!();
    let base = Case::new(1, 4, 2, 40, Dtype::F32, Mask::IncludeCurrent);
    // z = q.k / sqrt(40) has a standard deviation of 2500
    check(attn, &Case { prefill: vec![40], steps: vec![1, 1], qk_std: 50.0, ..base });
}

/// Early exit moves `o` by at most 5 eps max|v|: within a key slot the skipped weights sum
/// to less than the stick left when it stops (< eps, error < eps max|v|); the slots and chunks
/// behind it are scaled by less than eps, and both their true and their computed weights sum
/// to less than eps (stick-breaking telescopes), twice for slots and twice for chunks.
#[test]
fn early_exit_is_bounded() {
    let attn = gpu_or_skip!();
    let eps = 1e-3f32;
    let mut case = Case::new(1, 4, 2, 40, Dtype::F32, Mask::Strict);
    case.prefill = vec![400];
    case.steps = vec![1, 1];
    case.qk_std = 1.5; // logits of a few units: sticks are spent within tens of keys
    case.splits = Some(2);
    case.eps = eps;
    let (seqs, bias) = sequences(&case);
    let out = run(attn, &case, &seqs, &bias).expect("run");
    let (o, rem, lrem) = expected(&case, &seqs, &bias);
    let vmax = seqs.iter().flat_map(|s| s.v.iter()).fold(0.0f32, |m, x| m.max(x.abs())) as f64;
    let e = compare("o with early exit", &out.o, &o);
    assert!(e.max_abs <= 5.0 * eps as f64 * vmax + F32_TOL, "{e:?}");
    // rem is only an upper bound once below eps; the exit did happen (rem far above truth).
    for ((g, w), lw) in out.rem.iter().zip(&rem).zip(&lrem) {
        assert!((*g as f64) < eps as f64 && (*g as f64) >= w - F32_TOL, "rem {g} vs {w}");
        assert!(*lw < -30.0, "the case must spend the stick: log rem {lw}");
    }
    assert!(out.log_rem.iter().zip(&lrem).any(|(g, w)| (*g as f64) > w + 1.0), "no early exit happened");
}

/// A cache filled to exactly its capacity decodes; one more token is an error that records
/// nothing and leaves the mirror alone.
#[test]
fn capacity_exact_and_overflow() {
    let attn = gpu_or_skip!();
    let mut case = Case::new(2, 4, 2, 40, Dtype::F32, Mask::Strict);
    case.prefill = vec![10, 4];
    case.steps = vec![2, 1, 2];
    assert_eq!(case.spare, 0);
    check(attn, &case); // the longest sequence ends exactly at capacity

    let mut cache = KvCache::new(attn, KvCacheDesc::new(2, 1, 8, 5, Dtype::F32)).expect("cache");
    let kv = zeros(attn, 2 * 5 * 8 * 4);
    let mut enc = attn.device().create_command_encoder(&Default::default());
    let t = TensorRef::bthd(&kv);
    attn.append(&mut enc, &mut cache, &Append::new(t, t, 5).with_counts(&[5, 3])).expect("fill");
    assert_eq!(cache.lengths(), &[5, 3]);
    let err = attn.append(&mut enc, &mut cache, &Append::new(t, t, 5).with_counts(&[0, 3]));
    assert_eq!(err, Err(Error::CacheOverflow { sequence: 1, length: 3, appending: 3, capacity: 5 }));
    let err = attn.append(&mut enc, &mut cache, &Append::new(t, t, 1));
    assert!(matches!(err, Err(Error::CacheOverflow { sequence: 0, .. })), "{err:?}");
    assert_eq!(cache.lengths(), &[5, 3]);
    attn.append(&mut enc, &mut cache, &Append::new(t, t, 2).with_counts(&[0, 2])).expect("top up");
    cache.set_lengths(attn, &mut enc, &[1, 0]).expect("set lengths");
    let lens = read_u32(attn, enc, cache.lengths_buffer(), 8);
    assert_eq!(lens, vec![1, 0]);
    assert_eq!(cache.lengths(), &[1, 0]);
}

/// A cache on the caller's buffer: K and V in two halves of one buffer, `[B, T, Hkv, D]` with
/// a padded token stride.
#[test]
fn cache_on_caller_buffers() {
    let attn = gpu_or_skip!();
    let (b, hk, d, cap) = (2u32, 2u32, 40u32, 30u32);
    let tok = hk * d + 4; // 4 elements of padding per token
    let strides = Strides { batch: (cap * tok) as u64, token: tok as u64, head: d as u64 };
    let half = (b * cap * tok) as u64;
    let buf = zeros(attn, 2 * half * 4);
    let k = CacheTensor { buffer: buf.clone(), offset: 0, strides };
    let v = CacheTensor { buffer: buf.clone(), offset: half, strides };
    let desc = KvCacheDesc::new(b, hk, d, cap, Dtype::F32);
    let mut cache = KvCache::from_buffers(attn, desc, k, v).expect("cache");
    // Fill it, then decode one token and compare with the reference.
    let mut rng = Rng::new(7);
    let t = 20u32;
    let h = 4u32;
    let (q, kk, vv) = (rng.normals((b * t * h * d) as usize, 1.0), rng.normals((b * t * hk * d) as usize, 1.0), rng.normals((b * t * hk * d) as usize, 1.0));
    let (kb, vb) = (buffer(attn, &kk, Dtype::F32), buffer(attn, &vv, Dtype::F32));
    let qb = buffer(attn, &q, Dtype::F32);
    let ob = zeros(attn, (b * h * d) as u64 * 4);
    let mut enc = attn.device().create_command_encoder(&Default::default());
    attn.append(&mut enc, &mut cache, &Append::new(TensorRef::bthd(&kb), TensorRef::bthd(&vb), t)).expect("append");
    let qlast = TensorRef::strided(&qb, Layout::Bthd.strides(t, h, d)).at_offset(((t - 1) * h * d) as u64);
    let call = Decode::new(&cache, h, 1, qlast, TensorRef::bthd(&ob)).with_mask(Mask::IncludeCurrent);
    assert_eq!(attn.decode_plan(&call).expect("plan").variant.load, Load::Vec4, "84-element token stride, f32");
    attn.decode(&mut enc, &call).expect("decode");
    let got = read(attn, enc, &[(&ob, (b * h * d) as u64 * 4, Dtype::F32)]).remove(0);
    let shape = Shape::new().with_batch(b).with_seq_len(t).with_heads(h).with_head_dim(d).with_kv_heads(hk);
    let r = reference::forward(&HostInput::new(shape, &q, &kk, &vv).with_mask(Mask::IncludeCurrent)).expect("ref");
    let want: Vec<f64> = (0..b as usize)
        .flat_map(|bb| r.o[((bb * t as usize + t as usize - 1) * (h * d) as usize)..][..(h * d) as usize].to_vec())
        .collect();
    let e = compare("o", &got, &want);
    assert!(e.max_abs <= F32_TOL, "{e:?}");
}

/// A small valid setup for the bad-input tests: cache of 2 sequences holding 3 tokens.
struct Setup {
    cache: KvCache,
    q: wgpu::Buffer,
    o: wgpu::Buffer,
    small: wgpu::Buffer,
    no_storage: wgpu::Buffer,
}

const H: u32 = 4;
const HK: u32 = 2;
const D: u32 = 8;

fn setup(attn: &Attention) -> Setup {
    let mut cache = KvCache::new(attn, KvCacheDesc::new(2, HK, D, 6, Dtype::F32)).expect("cache");
    let mut enc = attn.device().create_command_encoder(&Default::default());
    cache.set_lengths(attn, &mut enc, &[3, 3]).expect("lengths");
    attn.queue().submit([enc.finish()]);
    let no_storage = common::plain(attn, 4096, wgpu::BufferUsages::COPY_SRC);
    Setup { cache, q: zeros(attn, 4096), o: zeros(attn, 4096), small: zeros(attn, 16), no_storage }
}

fn decode_err(attn: &Attention, call: &Decode<'_>) -> Error {
    let mut enc = attn.device().create_command_encoder(&Default::default());
    match attn.decode(&mut enc, call) {
        Ok(()) => panic!("no error for {call:?}"),
        Err(e) => e,
    }
}

#[test]
fn bad_decode_inputs_are_errors() {
    let attn = gpu_or_skip!();
    let s = setup(attn);
    let t = TensorRef::bthd;
    let base = |n| Decode::new(&s.cache, H, n, t(&s.q), t(&s.o));
    // The valid call works.
    let mut enc = attn.device().create_command_encoder(&Default::default());
    attn.decode(&mut enc, &base(2)).expect("valid call");

    let shape = |e: Error| matches!(e, Error::Shape(_));
    let param = |name: &str, e: &Error| matches!(e, Error::InvalidParameter { name: n, .. } if *n == name);
    assert!(shape(decode_err(attn, &base(0))), "no queries");
    assert!(shape(decode_err(attn, &base(17))), "17 queries");
    assert!(shape(decode_err(attn, &base(4))), "more queries than tokens held");
    assert_eq!(decode_err(attn, &tweak(base(1), |c| c.heads = 3)), Error::HeadsNotDivisible { heads: 3, kv_heads: 2 });
    assert!(shape(decode_err(attn, &tweak(base(1), |c| c.heads = 0))), "0 heads");
    assert!(matches!(decode_err(attn, &tweak(base(1), |c| c.scale = Some(f32::NAN))), Error::NonFiniteScale(_)));
    assert!(matches!(decode_err(attn, &tweak(base(1), |c| c.scale = Some(f32::INFINITY))), Error::NonFiniteScale(_)));
    for eps in [-1e-3, 1.0, f32::NAN] {
        assert!(param("early_exit_eps", &decode_err(attn, &tweak(base(1), |c| c.early_exit_eps = eps))), "eps {eps}");
    }
    assert!(param("splits", &decode_err(attn, &tweak(base(1), |c| c.tuning.splits = Some(0)))));
    assert!(param("splits", &decode_err(attn, &tweak(base(1), |c| c.tuning.splits = Some(1 << 20)))));
    assert!(param("lanes_per_key", &decode_err(attn, &tweak(base(1), |c| c.tuning.lanes = Some(12)))));
    assert!(param("keys_per_step", &decode_err(attn, &tweak(base(1), |c| c.tuning.keys_per_step = Some(3)))));
    // An f32 cache has no 8-element loads; an odd head stride allows only scalar ones.
    assert!(param("load", &decode_err(attn, &tweak(base(1), |c| c.tuning.load = Some(Load::Vec8)))));
    let min_sg = attn.capabilities().subgroup_min_size;
    if min_sg < 64 {
        let e = decode_err(attn, &base(1).with_path(KernelPath::Subgroup).with_tuning(sbattn::DecodeTuning::default().with_lanes(64)));
        assert!(matches!(e, Error::Unsupported(_)), "{e:?}");
    }
    // Tensors.
    assert!(matches!(decode_err(attn, &tweak(base(1), |c| c.q = t(&s.small))), Error::BufferTooSmall { tensor: "q", .. }));
    assert!(matches!(decode_err(attn, &tweak(base(1), |c| c.o = t(&s.small))), Error::BufferTooSmall { tensor: "o", .. }));
    assert!(matches!(decode_err(attn, &tweak(base(1), |c| c.o = t(&s.no_storage))), Error::BufferUsage { tensor: "o", .. }));
    assert!(matches!(decode_err(attn, &tweak(base(1), |c| c.o = t(&s.q).at_offset(512))), Error::Aliasing { .. }));
    let in_cache = TensorRef::bthd(s.cache.v().buffer);
    assert!(matches!(decode_err(attn, &tweak(base(1), |c| c.o = in_cache)), Error::Aliasing { .. }));
    let overlapping = TensorRef::strided(&s.o, Strides { batch: 8, token: 8, head: 4 });
    assert!(matches!(decode_err(attn, &tweak(base(1), |c| c.o = overlapping)), Error::Stride { tensor: "o", .. }));
    let rem_small = Remainder::Return(BufferRef::new(&s.small));
    assert!(matches!(decode_err(attn, &tweak(base(2), |c| c.remainder = rem_small)), Error::BufferTooSmall { tensor: "rem", .. }));
    let rem_on_o = Remainder::Return(BufferRef::new(&s.o));
    assert!(matches!(decode_err(attn, &tweak(base(1), |c| c.remainder = rem_on_o)), Error::Aliasing { .. }));
    let bias_small = Remainder::AddBias(BufferRef::new(&s.small));
    assert!(matches!(decode_err(attn, &tweak(base(1), |c| c.remainder = bias_small)), Error::BufferTooSmall { tensor: "bias", .. }));
    let lrem_small = Some(BufferRef::new(&s.small).at_offset(2));
    assert!(matches!(decode_err(attn, &tweak(base(1), |c| c.log_rem = lrem_small)), Error::BufferTooSmall { tensor: "log_rem", .. }));
}

#[test]
fn bad_cache_and_append_inputs_are_errors() {
    let attn = gpu_or_skip!();
    let dev = attn.device();
    let new = |b, hk, d, cap| KvCache::new(attn, KvCacheDesc::new(b, hk, d, cap, Dtype::F32)).err();
    assert_eq!(new(2, 2, 0, 4), Some(Error::HeadDim { head_dim: 0, max: 256 }));
    assert_eq!(new(2, 2, 300, 4), Some(Error::HeadDim { head_dim: 300, max: 256 }));
    assert!(matches!(new(0, 2, 8, 4), Some(Error::Shape(_))));
    assert!(matches!(new(2, 0, 8, 4), Some(Error::Shape(_))));
    assert!(matches!(new(2, 2, 8, 0), Some(Error::Shape(_))));
    assert!(matches!(new(1 << 16, 64, 256, 1 << 20), Some(Error::Limit { .. })));

    let s = setup(attn);
    let desc = KvCacheDesc::new(2, HK, D, 6, Dtype::F32);
    let strides = Layout::Bhtd.strides(6, HK, D);
    let owned = |buffer: &wgpu::Buffer, offset| CacheTensor { buffer: buffer.clone(), offset, strides };
    let from = |k, v| KvCache::from_buffers(attn, desc, k, v).err();
    assert!(matches!(from(owned(&s.no_storage, 0), owned(&s.q, 0)), Some(Error::BufferUsage { .. })));
    assert!(matches!(from(owned(&s.small, 0), owned(&s.q, 0)), Some(Error::BufferTooSmall { .. })));
    assert!(matches!(from(owned(&s.q, 0), owned(&s.q, 8)), Some(Error::Aliasing { .. })));
    let bad = CacheTensor { buffer: s.q.clone(), offset: 0, strides: Strides { batch: 96, token: 4, head: 48 } };
    assert!(matches!(from(bad, owned(&s.o, 0)), Some(Error::Stride { .. })));

    let mut cache = KvCache::new(attn, desc).expect("cache");
    let mut enc = dev.create_command_encoder(&Default::default());
    assert!(matches!(cache.set_lengths(attn, &mut enc, &[1]), Err(Error::HostData { .. })));
    assert!(matches!(cache.set_lengths(attn, &mut enc, &[1, 7]), Err(Error::CacheOverflow { sequence: 1, .. })));
    let t = TensorRef::bthd;
    let mut append = |call: &Append<'_>| attn.append(&mut enc, &mut cache, call).err();
    assert!(matches!(append(&Append::new(t(&s.q), t(&s.o), 0)), Some(Error::Shape(_))));
    assert!(matches!(append(&Append::new(t(&s.q), t(&s.o), 2).with_counts(&[1])), Some(Error::HostData { .. })));
    assert!(matches!(append(&Append::new(t(&s.q), t(&s.o), 2).with_counts(&[1, 3])), Some(Error::Shape(_))));
    assert!(matches!(append(&Append::new(t(&s.q), t(&s.o), 7)), Some(Error::CacheOverflow { .. })));
    assert!(matches!(append(&Append::new(t(&s.small), t(&s.o), 2)), Some(Error::BufferTooSmall { tensor: "k", .. })));
    assert!(matches!(append(&Append::new(t(&s.q), t(&s.no_storage), 2)), Some(Error::BufferUsage { tensor: "v", .. })));
    let kc = cache.k().buffer.clone();
    let err = attn.append(&mut enc, &mut cache, &Append::new(t(&kc), t(&s.o), 2));
    assert!(matches!(err, Err(Error::Aliasing { .. })), "{err:?}");
    assert_eq!(cache.lengths(), &[0, 0], "failed appends must not move the mirror");
}
