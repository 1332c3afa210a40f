//! Property tests on the GPU: random problems of every op against the f64 reference, at the
//! tolerances of tests/forward.rs, tests/decode.rs and tests/backward.rs.
//!
//! Each case draws B, T, H, Hkv (H % Hkv == 0), D in 1..=256 (mostly small, a few large),
//! layouts (`[B,T,H,D]`, `[B,H,T,D]`, padded strides in either order, fused QKV with offsets;
//! padding filled with NaN so that a read of it poisons the result), both masks, every
//! remainder mode, f32 and f16 (where the adapter has it), scales (default, 0, negative,
//! random), early exit, and one kernel path the adapter has (over the cases, every path):
//! - `forward_matches_reference`: `Attention::forward` on its own tensors;
//! - `decode_matches_reference`: a `KvCache` (the library's or on the test's strided buffers,
//!   NaN past what is appended), a ragged prefill (`Append` with counts, then sometimes the
//!   prefill's own queries through `Forward::on_cache` packed by `cu_seqlens`), and decode steps
//!   of 1 to 16 tokens (`Append` + `Decode`, forced split and lane choices sometimes);
//! - `backward_matches_reference`: a forward saving `log rem`, then `Attention::backward` with
//!   strided gradients (`d_rem`, `d_bias` as the mode needs).
//!
//! Outputs are written into buffers pre-filled with a sentinel: every element outside the
//! output tensor must still hold it afterwards. NaN or infinity anywhere fails.
//!
//! Two modes:
//! - **CI** (the default): [`CI_CASES`] cases (forward 80, decode 70, backward 50) on the few
//!   kernels of fixed palettes, since compiling is what costs on lavapipe (cold, about 3 minutes
//!   on 2 cores; the cases themselves take about 8 s once compiled). Each op's cases cover every
//!   combination of its palette entry (dtype, path, head-dim class), mask and remainder mode,
//!   and for decode GQA or multi-token steps and prefill on the cache or not, exhaustively: case
//!   `i` takes them from the digits of `i` ([`G::cover`]); everything else is random.
//! - **Long run**: `SBATTN_FUZZ_CASES=N` runs `N` cases over the three tests (40 % forward,
//!   35 % decode, 25 % backward) that draw any kernel (`SBATTN_FUZZ_KERNELS=all`, then the
//!   default; `ci` keeps the palettes): every head dim 1..=256, path and dtype, decode rows,
//!   lanes, loads and keys per step. Expect a compile (5 to 90 s on lavapipe) per new variant.
//!
//! `SBATTN_FUZZ_SEED=S` runs another seed. Every case runs even after a failure; each failure
//! prints (and the test's panic lists) `SBATTN_FUZZ_SEED=.. SBATTN_FUZZ_KERNELS=..
//! SBATTN_FUZZ_ONLY=op:i`, which reruns just that case.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::grad;
use common::{check_close, compare, read, Rem, Rng, REMS};
use sbattn::{
    reference, round_to, Append, Attention, Backward, BufferRef, CacheTensor, Decode, DecodeTuning, Dtype, Forward,
    HostInput, HostRemainder, KernelPath, KvCache, KvCacheDesc, Layout, Load, Mask, Remainder, Shape, Strides, TensorRef,
};

/// Cases per CI run over the three tests: forward 80, decode 70, backward 50, each at least one
/// whole cycle of what [`G::cover`] covers (forward 24, decode 64, backward 16 cases).
const CI_CASES: u64 = 200;

/// What a written output's elements outside the tensor must still hold (exact in f16 too).
const SENTINEL: f32 = -1024.0;

// ---------------------------------------------------------------------------------------------
// Running cases
// ---------------------------------------------------------------------------------------------

/// With `SBATTN_FUZZ_VERBOSE=1`, prints a case before it runs (to see which one hangs).
fn starting(what: &str) {
    if std::env::var("SBATTN_FUZZ_VERBOSE").as_deref() == Ok("1") {
        eprintln!("starting: {what}");
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let s = std::env::var(name).ok()?;
    Some(s.trim().parse().unwrap_or_else(|_| panic!("{name}={s} is not a number")))
}

/// Runs `share` (a fraction) of the cases of this run through `case(attn, rng)`, each with its
/// own seed; every case runs even after a failure, and the test then fails listing how to rerun
/// each failed case alone (`SBATTN_FUZZ_ONLY=op:i` runs case `i` of `op` only, whatever the
/// number of cases).
fn run_cases(op: &str, share: f64, case: impl Fn(&Attention, &mut G) -> String) {
    let Some(attn) = common::attention() else { return };
    let total = env_u64("SBATTN_FUZZ_CASES").unwrap_or(CI_CASES);
    let seed = env_u64("SBATTN_FUZZ_SEED").unwrap_or(0x5ba7_0f00);
    let kernels = if all_kernels() { "all" } else { "ci" };
    let cases: Vec<u64> = match std::env::var("SBATTN_FUZZ_ONLY") {
        Ok(only) => match only.split_once(':') {
            Some((o, i)) if o == op => vec![i.trim().parse().unwrap_or_else(|_| panic!("SBATTN_FUZZ_ONLY={only}: op:index"))],
            _ => Vec::new(),
        },
        Err(_) => (0..((total as f64 * share).round() as u64).max(1)).collect(),
    };
    let t0 = std::time::Instant::now();
    let mut failed = Vec::new();
    for &i in &cases {
        let id = format!("{op}:{i}");
        // Independent streams per case (a hashed seed: Rng's own states step by a constant).
        let tag = op.bytes().fold(0u64, |h, c| h.wrapping_mul(31).wrapping_add(c as u64));
        let mut g = G::new(Rng::new(Rng::new(seed ^ tag.wrapping_mul(0xa24b_aed4_963e_e407)).next_u64() ^ Rng::new(i).next_u64()), i);
        let t = std::time::Instant::now();
        // (A failing case's panic message is printed by the panic hook as it happens.)
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(attn, &mut g))) {
            Ok(what) => eprintln!("{id} ({:.2?}): {what}", t.elapsed()),
            Err(_) => {
                let rerun = format!("SBATTN_FUZZ_SEED={seed} SBATTN_FUZZ_KERNELS={kernels} SBATTN_FUZZ_ONLY={id}");
                eprintln!("\nFAILED {id}: rerun with {rerun} cargo test --test fuzz_gpu\n");
                failed.push(rerun);
            }
        }
    }
    eprintln!("{op}: {} cases, {} failed (seed {seed}, {kernels} kernels) in {:.1?}", cases.len(), failed.len(), t0.elapsed());
    assert!(failed.is_empty(), "{op}: {} of {} cases failed; rerun each with:\n{}", failed.len(), cases.len(), failed.join("\n"));
}

#[test]
fn forward_matches_reference() {
    run_cases("forward", 0.4, forward_case);
}

#[test]
fn decode_matches_reference() {
    run_cases("decode", 0.35, decode_case);
}

#[test]
fn backward_matches_reference() {
    run_cases("backward", 0.25, backward_case);
}

// ---------------------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------------------

/// Whether cases may use any kernel (`SBATTN_FUZZ_KERNELS=all`, the default when
/// `SBATTN_FUZZ_CASES` is set) or only the CI palettes below (`ci`, the default otherwise).
///
/// Each kernel variant costs its first dispatch a compile, and lavapipe compiles on its one
/// queue thread, so the compiles of the three tests add up however they run: 5 to 40 s each on
/// 2 cores (the forward kernel is specialised by dtype, path and `ceil(D / 16)`; the decode
/// kernel by dtype, path, rows (`group x step tokens`, to a power of two), lanes, columns and
/// loads; the backward pass compiles four, after its forward), against milliseconds to run a
/// small case. A CI run stays on the few kernels of its palettes (about 20 pipelines; the
/// forward calls of the backward and prefill cases reuse the forward palette's kernels), and
/// covers them exhaustively instead (see [`G::cover`]); the long run (`all`) draws any kernel.
fn all_kernels() -> bool {
    match std::env::var("SBATTN_FUZZ_KERNELS").as_deref() {
        Ok("all") => true,
        Ok("ci") => false,
        Ok(other) => panic!("SBATTN_FUZZ_KERNELS={other}: all or ci"),
        Err(_) => std::env::var("SBATTN_FUZZ_CASES").is_ok(),
    }
}

/// (dtype, path, head dims) of the CI palettes: every forward path the portable kernels have
/// (the emulated tensor-core kernel included; the real one where the adapter has it falls back
/// to the first entry), both dtypes, head dims within one `ceil(D / 16)` class each.
type Entry = (Dtype, KernelPath, (u32, u32));

const FORWARD_PALETTE: [Entry; 3] = [
    (Dtype::F32, KernelPath::Subgroup, (1, 16)),
    (Dtype::F16, KernelPath::SharedMemory, (1, 16)),
    (Dtype::F16, KernelPath::EmulatedCooperativeMatrix, (16, 16)),
];

/// Exact head dims for decode: its kernel also depends on the loads the head dim allows (7:
/// scalar; 16: eight f16 at a time) and the lanes it needs. Its prefill on the cache runs the
/// forward kernel of the same path (Auto: the subgroup one here), of the forward palette.
const DECODE_PALETTE: [Entry; 2] = [(Dtype::F32, KernelPath::Auto, (7, 7)), (Dtype::F16, KernelPath::SharedMemory, (16, 16))];

/// The backward kernels of both portable paths; the forward pass before them runs the forward
/// palette's kernel of the same dtype, path and head dims.
const BACKWARD_PALETTE: [Entry; 2] = [(Dtype::F32, KernelPath::Subgroup, (1, 16)), (Dtype::F16, KernelPath::SharedMemory, (1, 16))];

// ---------------------------------------------------------------------------------------------
// Drawing
// ---------------------------------------------------------------------------------------------

/// The case's random choices.
struct G {
    rng: Rng,
    /// The digits of the case's index not yet used by [`G::cover`] (CI palettes only).
    digits: Option<u64>,
}

impl G {
    /// The case `index` of a run, drawing from `rng`.
    fn new(rng: Rng, index: u64) -> Self {
        G { rng, digits: (!all_kernels()).then_some(index) }
    }

    /// One of `n` choices that a CI run must cover: the case index's next digit in a mixed
    /// radix (the first `cover` of a case cycles fastest), so that the cases `0..product of the
    /// n's` of an op take every combination once; random in the long run. Each op covers its
    /// palette entry, then the mask (2), then the remainder mode (4), then its own choices
    /// (decode: GQA or two-token steps, then prefill on the cache or not): forward 3 x 2 x 4 =
    /// 24 cases, backward 2 x 2 x 4 = 16, decode 2 x 2 x 4 x 2 x 2 = 64 (see `CI_CASES`).
    fn cover(&mut self, n: u64) -> u64 {
        match &mut self.digits {
            Some(rest) => {
                let d = *rest % n;
                *rest /= n;
                d
            }
            None => self.below(n),
        }
    }

    /// A (dtype, path, head dim) for `op`: any the adapter runs (`all`: `paths` lists the
    /// op's paths for a dtype and head dim), else the palette's entry this case covers (an
    /// entry the adapter lacks falls back to the first it has).
    fn kernel(&mut self, attn: &Attention, palette: &[Entry], paths: impl Fn(Dtype, u32) -> Vec<KernelPath>) -> (Dtype, KernelPath, u32) {
        if all_kernels() {
            let dtype = self.dtype(attn);
            let d = self.head_dim();
            return (dtype, self.pick(&paths(dtype, d)), d);
        }
        let runs = |e: &Entry| paths(e.0, e.2 .0).contains(&e.1);
        let e = palette[self.cover(palette.len() as u64) as usize];
        let e = if runs(&e) { e } else { *palette.iter().find(|e| runs(e)).expect("a palette entry this adapter runs") };
        let d = self.range(e.2 .0, e.2 .1);
        (e.0, e.1, d)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n <= 1 { 0 } else { self.rng.next_u64() % n }
    }
    fn range(&mut self, lo: u32, hi: u32) -> u32 {
        lo + self.below((hi - lo + 1) as u64) as u32
    }
    fn chance(&mut self, p: f64) -> bool {
        self.rng.uniform() < p
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
    fn normals(&mut self, n: usize, std: f32) -> Vec<f32> {
        self.rng.normals(n, std)
    }

    /// Sequence lengths: mostly under 100, sometimes up to 200, rarely up to 520.
    fn seq_len(&mut self) -> u32 {
        match self.below(20) {
            0..=11 => self.range(1, 40),
            12..=17 => self.range(1, 130),
            18 => self.range(100, 200),
            _ => self.range(200, 520),
        }
    }

    /// Head dims 1..=256, mostly up to 64 (each distinct `ceil(D / 16)` is a kernel to compile).
    fn head_dim(&mut self) -> u32 {
        match self.below(10) {
            0..=2 => self.range(1, 16),
            3..=5 => self.range(17, 64),
            6 | 7 => self.pick(&[32, 64, 80, 96, 128]),
            8 => self.range(65, 128),
            _ => self.range(129, 256),
        }
    }

    /// (H, Hkv): multi-head, grouped or multi-query.
    fn heads(&mut self) -> (u32, u32) {
        let hkv = self.range(1, 3);
        (hkv * self.pick(&[1, 1, 2, 3, 4]), hkv)
    }

    fn mask(&mut self) -> Mask {
        if self.cover(2) == 0 { Mask::Strict } else { Mask::IncludeCurrent }
    }

    fn scale(&mut self) -> Option<f32> {
        match self.below(8) {
            0..=3 => None,
            4 => Some(0.0),
            5 => Some(-self.rng.uniform() as f32),
            _ => Some((self.rng.uniform() * 0.6 - 0.3) as f32),
        }
    }

    fn eps(&mut self) -> f32 {
        if self.chance(0.15) { self.pick(&[1e-4, 1e-3, 1e-2]) } else { 0.0 }
    }

    fn rem(&mut self) -> Rem {
        REMS[self.cover(4) as usize]
    }

    fn dtype(&mut self, attn: &Attention) -> Dtype {
        if attn.capabilities().f16() && self.chance(0.5) { Dtype::F16 } else { Dtype::F32 }
    }

    /// A placement of a `[B, tokens, heads, D]` tensor: contiguous in either order, or padded
    /// between heads, tokens and batch entries in either order, at an element offset (all
    /// multiples of 8 with `align8`, as the tensor-core kernels need of k and v).
    fn place(&mut self, tokens: u32, heads: u32, d: u32, align8: bool) -> Place {
        let (t, h, dd) = (tokens as u64, heads as u64, d as u64);
        let pad = |g: &mut G| if align8 { 8 * g.below(3) } else { g.below(9) };
        let kind = self.below(4);
        let offset = if self.chance(0.5) { 0 } else { pad(self) * 5 };
        let strides = match kind {
            0 => Layout::Bthd.strides(tokens, heads, d),
            1 => Layout::Bhtd.strides(tokens, heads, d),
            2 => {
                let head = dd + pad(self);
                let token = h * head + pad(self);
                Strides { batch: t * token + pad(self), token, head }
            }
            _ => {
                let token = dd + pad(self);
                let head = t * token + pad(self);
                Strides { batch: h * head + pad(self), token, head }
            }
        };
        let contiguous = match kind {
            0 => Some(Layout::Bthd),
            1 => Some(Layout::Bhtd),
            _ => None,
        };
        Place { offset, strides, contiguous }
    }
}

// ---------------------------------------------------------------------------------------------
// Tensors in buffers
// ---------------------------------------------------------------------------------------------

/// Where a `[B, T, heads, D]` tensor lies in its buffer (elements).
#[derive(Clone, Copy, Debug)]
struct Place {
    offset: u64,
    strides: Strides,
    /// Passed as `TensorRef::contiguous` (at offset 0) rather than strided.
    contiguous: Option<Layout>,
}

impl Place {
    fn at(&self, b: u32, t: u32, h: u32) -> usize {
        (self.offset + self.strides.index(b, t, h)) as usize
    }

    /// Elements the buffer needs: one past the last element of the tensor.
    fn end(&self, [b, t, h]: [u32; 3], d: u32) -> usize {
        self.at(b - 1, t - 1, h - 1) + d as usize
    }

    fn tensor<'a>(&self, buffer: &'a wgpu::Buffer) -> TensorRef<'a> {
        match self.contiguous {
            Some(l) if self.offset == 0 => TensorRef::contiguous(buffer, l),
            _ => TensorRef::strided(buffer, self.strides).at_offset(self.offset),
        }
    }

    /// Writes the `[B, T, heads, D]` values of `x` (contiguous `[B, T, heads, D]`) into `buf`.
    fn scatter(&self, buf: &mut [f32], x: &[f32], [b, t, h]: [u32; 3], d: u32) {
        let d = d as usize;
        for bi in 0..b {
            for ti in 0..t {
                for hi in 0..h {
                    let src = (((bi * t + ti) * h + hi) as usize) * d;
                    let dst = self.at(bi, ti, hi);
                    buf[dst..dst + d].copy_from_slice(&x[src..src + d]);
                }
            }
        }
    }

    /// The `[B, T, heads, D]` values in `buf`, and whether every other element of `buf` still
    /// holds `SENTINEL` (an output written nowhere else).
    fn gather(&self, buf: &[f32], [b, t, h]: [u32; 3], d: u32) -> (Vec<f32>, Option<usize>) {
        let du = d as usize;
        let mut inside = vec![false; buf.len()];
        let mut out = Vec::with_capacity((b * t * h) as usize * du);
        for bi in 0..b {
            for ti in 0..t {
                for hi in 0..h {
                    let at = self.at(bi, ti, hi);
                    out.extend_from_slice(&buf[at..at + du]);
                    inside[at..at + du].iter_mut().for_each(|x| *x = true);
                }
            }
        }
        let stray = (0..buf.len()).find(|&i| !inside[i] && buf[i].to_bits() != SENTINEL.to_bits());
        (out, stray)
    }
}

/// Host values of a buffer of `len` elements (at least one), all `fill`.
fn host_buffer(len: usize, fill: f32) -> Vec<f32> {
    vec![fill; len.max(1)]
}

fn upload(attn: &Attention, data: &[f32], dtype: Dtype) -> wgpu::Buffer {
    sbattn::upload(attn.device(), "fuzz", data, dtype)
}

/// A contiguous `[len]` run at element `offset` of a sentinel-filled f32 buffer `extra` longer.
struct RowBuf {
    buffer: wgpu::Buffer,
    offset: u64,
    len: usize,
    total: usize,
}

impl RowBuf {
    fn new(attn: &Attention, g: &mut G, len: usize) -> Self {
        let offset = g.below(20);
        let total = offset as usize + len + g.below(8) as usize;
        RowBuf { buffer: upload(attn, &host_buffer(total, SENTINEL), Dtype::F32), offset, len, total }
    }
    fn at(&self) -> BufferRef<'_> {
        BufferRef::new(&self.buffer).at_offset(self.offset)
    }
    /// Its values from the whole buffer read back; panics if anything outside was written.
    fn values(&self, what: &str, all: &[f32]) -> Vec<f32> {
        let o = self.offset as usize;
        let stray = (0..self.total).find(|&i| (i < o || i >= o + self.len) && all[i].to_bits() != SENTINEL.to_bits());
        assert!(stray.is_none(), "{what}: element {stray:?} outside the run was written");
        all[o..o + self.len].to_vec()
    }
}

fn max_abs(x: &[f32]) -> f64 {
    x.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64))
}

/// A case's description: dtype, path, shape.
fn label(dtype: Dtype, path: KernelPath, shape: Shape) -> String {
    format!(
        "{dtype:?} {path:?} B{} T{} H{}/{} D{}",
        shape.batch(),
        shape.seq_len(),
        shape.heads(),
        shape.kv_heads(),
        shape.head_dim()
    )
}

// ---------------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------------

/// q, k, v of a dense problem, placed (separately, or fused in one buffer) and uploaded.
struct Inputs {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    places: [Place; 3],
    /// One buffer for all three (fused QKV) or one each.
    buffers: Vec<wgpu::Buffer>,
    desc: String,
}

impl Inputs {
    fn new(attn: &Attention, g: &mut G, shape: Shape, dtype: Dtype, align8: bool) -> Self {
        let (b, t, h, hk, d) = (shape.batch(), shape.seq_len(), shape.heads(), shape.kv_heads(), shape.head_dim());
        let std = if g.chance(0.1) { 3.0 } else { 1.0 };
        let q = round_to(&g.normals((b * t * h * d) as usize, std), dtype);
        let k = round_to(&g.normals((b * t * hk * d) as usize, std), dtype);
        let v = round_to(&g.normals((b * t * hk * d) as usize, 1.0), dtype);
        let qx = [b, t, h];
        let kx = [b, t, hk];
        if g.chance(0.2) {
            // Fused QKV: per token [q heads | k heads | v heads] (+ padding), one offset.
            let pad = if align8 { 8 * g.below(2) } else { g.below(9) };
            let base = if align8 { 8 * g.below(4) } else { g.below(30) };
            let token = ((h + 2 * hk) * d) as u64 + pad;
            let s = Strides { batch: t as u64 * token + if align8 { 8 } else { g.below(5) }, token, head: d as u64 };
            let p = |off: u64| Place { offset: base + off, strides: s, contiguous: None };
            let places = [p(0), p((h * d) as u64), p(((h + hk) * d) as u64)];
            let mut buf = host_buffer(places[2].end(kx, d), f32::NAN);
            places[0].scatter(&mut buf, &q, qx, d);
            places[1].scatter(&mut buf, &k, kx, d);
            places[2].scatter(&mut buf, &v, kx, d);
            let desc = format!("fused qkv {s:?} at {base}");
            return Inputs { q, k, v, places, buffers: vec![upload(attn, &buf, dtype)], desc };
        }
        let places = [g.place(t, h, d, false), g.place(t, hk, d, align8), g.place(t, hk, d, align8)];
        let mut buffers = Vec::new();
        for (i, (x, ext)) in [(&q, qx), (&k, kx), (&v, kx)].into_iter().enumerate() {
            let mut buf = host_buffer(places[i].end(ext, d), f32::NAN);
            places[i].scatter(&mut buf, x, ext, d);
            buffers.push(upload(attn, &buf, dtype));
        }
        let desc = format!("q {:?} k {:?} v {:?}", places[0], places[1], places[2]);
        Inputs { q, k, v, places, buffers, desc }
    }

    fn refs(&self) -> [TensorRef<'_>; 3] {
        let buf = |i: usize| &self.buffers[i.min(self.buffers.len() - 1)];
        [self.places[0].tensor(buf(0)), self.places[1].tensor(buf(1)), self.places[2].tensor(buf(2))]
    }
}

/// An output tensor in a sentinel-filled buffer.
struct Output {
    place: Place,
    buffer: wgpu::Buffer,
    /// Elements of the buffer (an f16 buffer of an odd count has one more, of padding).
    len: usize,
    bytes: u64,
    ext: [u32; 3],
    d: u32,
    dtype: Dtype,
}

impl Output {
    fn new(attn: &Attention, g: &mut G, ext: [u32; 3], d: u32, dtype: Dtype) -> Self {
        let place = g.place(ext[1], ext[2], d, false);
        let len = place.end(ext, d) + g.below(5) as usize;
        let host = host_buffer(len, SENTINEL);
        let bytes = (host.len() as u64 * dtype.size()).next_multiple_of(4);
        Output { place, buffer: upload(attn, &host, dtype), len: host.len(), bytes, ext, d, dtype }
    }
    fn tensor(&self) -> TensorRef<'_> {
        self.place.tensor(&self.buffer)
    }
    fn readback(&self) -> (&wgpu::Buffer, u64, Dtype) {
        (&self.buffer, self.bytes, self.dtype)
    }
    /// Its values from the whole buffer read back; panics if anything outside was written.
    fn values(&self, what: &str, all: &[f32]) -> Vec<f32> {
        let (v, stray) = self.place.gather(&all[..self.len], self.ext, self.d);
        assert!(stray.is_none(), "{what}: element {stray:?} of the buffer outside the tensor ({:?}) was written", self.place);
        v
    }
}

/// Tolerances of tests/forward.rs for `o` (plus early exit's bound), `rem` and `log rem`.
#[allow(clippy::too_many_arguments)]
fn check_forward(
    what: &str,
    got_o: &[f32],
    got_rem: Option<&[f32]>,
    got_lrem: Option<&[f32]>,
    want: &reference::Output,
    dtype: Dtype,
    path: KernelPath,
    t: u32,
    max_v: f64,
    eps: f32,
) {
    let rel_round = if dtype == Dtype::F16 { 2f64.powi(-11) } else { 0.0 };
    let coop = if path.is_cooperative() { (2f64.powi(-11) + t as f64 * 2f64.powi(-25)) * max_v } else { 0.0 };
    // Early exit: o moves by at most eps max|v| (and the remainder term by eps max|v or bias|).
    let early = 2.0 * eps as f64 * max_v;
    let (_, rms) = check_close(&format!("{what} o"), got_o, &want.o, rel_round, coop + early);
    if eps == 0.0 {
        let limit = if dtype == Dtype::F16 { 5e-4 } else { 1e-5 } * if path.is_cooperative() { 2.0 } else { 1.0 };
        assert!(rms <= limit, "{what}: relative RMS {rms:e} > {limit:e}");
    }
    // rem and log rem: exact without early exit; with it, the stick left where the walk stopped,
    // at or above the exact one (rem: by less than eps).
    let rows = |name: &str, got: &[f32], want: &[f64], above: f64| {
        if eps == 0.0 {
            check_close(&format!("{what} {name}"), got, want, 0.0, 0.0);
            return;
        }
        compare(&format!("{what} {name}"), got, want);
        let tol = |w: f64| 2e-5 * (1.0 + w.abs());
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let g = g as f64;
            assert!(g >= w - tol(w) && g < w + above + tol(w), "{what} {name}[{i}]: gpu {g} vs reference {w}, eps {eps}");
        }
    };
    if let Some(rem) = got_rem {
        rows("rem", rem, &want.rem, eps as f64);
    }
    if let Some(lrem) = got_lrem {
        rows("log_rem", lrem, &want.log_rem, f64::INFINITY);
    }
}

/// The forward paths the adapter runs for `dtype` at head dim `d` (tests/common: every path,
/// the emulated tensor-core kernel included).
fn forward_paths(attn: &Attention, dtype: Dtype, d: u32) -> Vec<KernelPath> {
    common::ALL_PATHS.into_iter().filter(|p| attn.forward_variant(dtype, d, *p).is_ok()).collect()
}

fn forward_case(attn: &Attention, g: &mut G) -> String {
    let (dtype, path, d) = g.kernel(attn, &FORWARD_PALETTE, |dt, d| forward_paths(attn, dt, d));
    let (h, hk) = g.heads();
    let t = g.seq_len();
    let b = if t > 200 { 1 } else { g.range(1, 3) };
    let shape = Shape::new().with_batch(b).with_seq_len(t).with_heads(h).with_kv_heads(hk).with_head_dim(d);
    let (mask, scale, eps, rem) = (g.mask(), g.scale(), g.eps(), g.rem());
    let inputs = Inputs::new(attn, g, shape, dtype, path.is_cooperative());
    let bias = round_to(&g.normals((h * d) as usize, 1.0), dtype);
    let bias_off = g.below(16);
    let mut bias_host = host_buffer(bias_off as usize + bias.len(), f32::NAN);
    bias_host[bias_off as usize..].copy_from_slice(&bias);
    let bias_buf = upload(attn, &bias_host, dtype);
    let o = Output::new(attn, g, [b, t, h], d, dtype);
    let rows = (b * h * t) as usize;
    let rem_buf = RowBuf::new(attn, g, rows);
    let lrem_buf = RowBuf::new(attn, g, rows);
    let with_lrem = g.chance(0.7);
    let [q, k, v] = inputs.refs();
    let mut call = Forward::new(shape, dtype, q, k, v, o.tensor())
        .with_mask(mask)
        .with_scale(scale)
        .with_path(path)
        .with_early_exit(eps)
        .with_remainder(match rem {
            Rem::Discard => Remainder::Discard,
            Rem::Return => Remainder::Return(rem_buf.at()),
            Rem::AddToValue => Remainder::AddToValue,
            Rem::AddBias => Remainder::AddBias(BufferRef::new(&bias_buf).at_offset(bias_off)),
        });
    if with_lrem {
        call = call.with_log_rem(lrem_buf.at());
    }
    let what = format!("{} {mask:?} {rem:?} scale {scale:?} eps {eps} [{}]", label(dtype, path, shape), inputs.desc);
    starting(&what);
    let mut enc = attn.device().create_command_encoder(&Default::default());
    attn.forward(&mut enc, &call).unwrap_or_else(|e| panic!("{what}: {e}"));
    let out = read(
        attn,
        enc,
        &[o.readback(), (&rem_buf.buffer, rem_buf.total as u64 * 4, Dtype::F32), (&lrem_buf.buffer, lrem_buf.total as u64 * 4, Dtype::F32)],
    );
    let got_o = o.values(&format!("{what} o"), &out[0]);
    let got_rem = rem_buf.values(&format!("{what} rem"), &out[1]);
    let got_lrem = lrem_buf.values(&format!("{what} log_rem"), &out[2]);
    let input = HostInput::new(shape, &inputs.q, &inputs.k, &inputs.v).with_mask(mask).with_scale(scale).with_remainder(rem.host(&bias));
    let want = reference::forward(&input).unwrap();
    let max_v = max_abs(&inputs.v).max(if rem == Rem::AddBias { max_abs(&bias) } else { 0.0 });
    check_forward(
        &what,
        &got_o,
        (rem == Rem::Return).then_some(&got_rem[..]),
        with_lrem.then_some(&got_lrem[..]),
        &want,
        dtype,
        path,
        t,
        max_v,
        eps,
    );
    if rem != Rem::Return {
        assert!(got_rem.iter().all(|x| x.to_bits() == SENTINEL.to_bits()), "{what}: rem written without Remainder::Return");
    }
    what
}

// ---------------------------------------------------------------------------------------------
// Decode (and prefill on the cache)
// ---------------------------------------------------------------------------------------------

fn decode_case(attn: &Attention, g: &mut G) -> String {
    let subgroups = attn.capabilities().subgroups();
    let (dtype, path, d) = g.kernel(attn, &DECODE_PALETTE, |_, _| {
        [KernelPath::Auto, KernelPath::Subgroup, KernelPath::SharedMemory].into_iter().filter(|p| *p != KernelPath::Subgroup || subgroups).collect()
    });
    let wide = all_kernels();
    let (mask, rem) = (g.mask(), g.rem());
    // (CI: one kernel per palette entry, of 2 rows per kv head: a group of 2 with steps of 1
    // token, or no group with steps of 2 tokens.)
    let gqa = g.cover(2) == 0;
    let (h, hk) = if wide {
        g.heads()
    } else {
        let hk = g.range(1, 3);
        (if gqa { 2 * hk } else { hk }, hk)
    };
    // Whether the prefill's own queries then run on the cache (Forward::on_cache).
    let on_cache = g.cover(2) == 1;
    let b = g.range(1, 3);
    let mut prefill: Vec<u32> = (0..b).map(|_| if g.chance(0.2) { 0 } else { g.seq_len().min(150) }).collect();
    if on_cache && prefill.iter().all(|&p| p == 0) {
        prefill[0] = g.range(1, 40);
    }
    let steps: Vec<u32> = (0..g.range(1, 3))
        .map(|_| match (wide, g.chance(0.15)) {
            (true, true) => g.range(5, 16),
            (true, false) => g.range(1, 4),
            (false, _) => if gqa { 1 } else { 2 },
        })
        .collect();
    let decoded: u32 = steps.iter().sum();
    let total = |s: usize| prefill[s] + decoded;
    let capacity = (0..b as usize).map(total).max().unwrap_or(1) + g.below(5) as u32;
    let (scale, eps) = (g.scale(), g.eps());
    let layout = g.pick(&[Layout::Bthd, Layout::Bhtd]);
    let mut tuning = DecodeTuning::default();
    if g.chance(0.2) {
        tuning = tuning.with_splits(g.range(1, 9));
    }
    // (Keys per step and loads are kernel choices: all kernels only.)
    if wide && g.chance(0.1) {
        tuning = tuning.with_keys_per_step(g.pick(&[1, 2, 4, 8]));
    }
    if wide && g.chance(0.1) {
        tuning = tuning.with_load(Load::Scalar);
    }
    // Host data per sequence, [tokens, heads, D].
    let seqs: Vec<[Vec<f32>; 3]> = (0..b as usize)
        .map(|s| {
            let n = total(s) as usize;
            [
                round_to(&g.normals(n * (h * d) as usize, 1.0), dtype),
                round_to(&g.normals(n * (hk * d) as usize, 1.0), dtype),
                round_to(&g.normals(n * (hk * d) as usize, 1.0), dtype),
            ]
        })
        .collect();
    let bias = round_to(&g.normals((h * d) as usize, 1.0), dtype);
    let bias_buf = upload(attn, &bias, dtype);
    // The cache: the library's, or strided on the test's buffers (NaN where nothing is appended).
    let desc = KvCacheDesc::new(b, hk, d, capacity, dtype).with_layout(layout);
    let own = g.chance(0.35);
    let mut cache = if own {
        let make = |g: &mut G| {
            let p = g.place(capacity, hk, d, !wide);
            let host = host_buffer(p.end([b, capacity, hk], d), f32::NAN);
            CacheTensor { buffer: upload(attn, &host, dtype), offset: p.offset, strides: p.strides }
        };
        let (kc, vc) = (make(g), make(g));
        KvCache::from_buffers(attn, desc, kc, vc).expect("cache on buffers")
    } else {
        KvCache::new(attn, desc).expect("cache")
    };
    // `[B, len, heads, D]` rows `from[s] ..` of each sequence's `which` (0 q, 1 k, 2 v), NaN past
    // a sequence's own rows, placed.
    let pack = |g: &mut G, which: usize, from: &[u32], len: u32, counts: &[u32]| {
        let heads = if which == 0 { h } else { hk };
        let row = (heads * d) as usize;
        let p = g.place(len, heads, d, false);
        let mut host = host_buffer(p.end([b, len, heads], d), f32::NAN);
        let mut logical = vec![f32::NAN; b as usize * len as usize * row];
        for s in 0..b as usize {
            for t in 0..counts[s] as usize {
                let src = (from[s] as usize + t) * row;
                let dst = (s * len as usize + t) * row;
                logical[dst..dst + row].copy_from_slice(&seqs[s][which][src..src + row]);
            }
        }
        p.scatter(&mut host, &logical, [b, len, heads], d);
        (p, upload(attn, &host, dtype))
    };
    let mut enc = attn.device().create_command_encoder(&Default::default());
    let zero = vec![0u32; b as usize];
    let pmax = prefill.iter().copied().max().unwrap_or(0);
    let mut what = format!(
        "{dtype:?} {path:?} B{b} H{h}/{hk} D{d} prefill {prefill:?} steps {steps:?} cap {capacity} {layout:?} own {own} {mask:?} {rem:?} scale {scale:?} eps {eps} {tuning:?}"
    );
    starting(&what);
    let mut keep = Vec::new(); // buffers alive until the submit
    if pmax > 0 {
        let (kp, kb) = pack(g, 1, &zero, pmax, &prefill);
        let (vp, vb) = pack(g, 2, &zero, pmax, &prefill);
        let app = Append::new(kp.tensor(&kb), vp.tensor(&vb), pmax).with_counts(&prefill);
        attn.append(&mut enc, &mut cache, &app).unwrap_or_else(|e| panic!("{what}: prefill append: {e}"));
        keep.extend([kb, vb]);
    }
    // The prefill's own queries on the cache: packed by cu_seqlens (Forward::on_cache).
    let prefill_total: u32 = prefill.iter().sum();
    let prefill_check = prefill_total > 0 && on_cache;
    let mut cu = vec![0u32];
    for p in &prefill {
        cu.push(cu[cu.len() - 1] + p);
    }
    let pre = prefill_check.then(|| {
        let (qp, qb) = {
            // Packed [1, total, H, D].
            let p = g.place(prefill_total, h, d, false);
            let mut host = host_buffer(p.end([1, prefill_total, h], d), f32::NAN);
            let row = (h * d) as usize;
            let mut logical = Vec::with_capacity(prefill_total as usize * row);
            for (s, &n) in prefill.iter().enumerate() {
                logical.extend_from_slice(&seqs[s][0][..n as usize * row]);
            }
            p.scatter(&mut host, &logical, [1, prefill_total, h], d);
            (p, upload(attn, &host, dtype))
        };
        let o = Output::new(attn, g, [1, prefill_total, h], d, dtype);
        let lrem = RowBuf::new(attn, g, (h * prefill_total) as usize);
        let shape = Shape::new().with_batch(b).with_seq_len(prefill_total).with_heads(h).with_kv_heads(hk).with_head_dim(d);
        // On the decode's path (Auto stays Auto): the forward kernel of that path.
        let call = Forward::on_cache(shape, dtype, qp.tensor(&qb), &cache, o.tensor())
            .with_varlen(&cu)
            .with_path(path)
            .with_mask(mask)
            .with_scale(scale)
            .with_log_rem(lrem.at());
        attn.forward(&mut enc, &call).unwrap_or_else(|e| panic!("{what}: prefill on the cache: {e}"));
        keep.push(qb);
        (o, lrem)
    });
    if pre.is_some() {
        what.push_str(" + prefill on cache");
    }
    // Decode steps: [B, decoded, heads, D] outputs, one slice per step.
    let o = Output::new(attn, g, [b, decoded, h], d, dtype);
    let rows = (b * h * decoded) as usize;
    let rem_buf = RowBuf::new(attn, g, rows);
    let lrem_buf = RowBuf::new(attn, g, rows);
    let mut t0 = 0u32;
    for &n in &steps {
        let counts = vec![n; b as usize];
        let from: Vec<u32> = prefill.iter().map(|p| p + t0).collect();
        let (kp, kb) = pack(g, 1, &from, n, &counts);
        let (vp, vb) = pack(g, 2, &from, n, &counts);
        let (qp, qb) = pack(g, 0, &from, n, &counts);
        attn.append(&mut enc, &mut cache, &Append::new(kp.tensor(&kb), vp.tensor(&vb), n)).unwrap_or_else(|e| panic!("{what}: append: {e}"));
        // This step's slice of o: its tokens t0 .. t0 + n.
        let st = o.place.strides;
        let o_step = TensorRef::strided(&o.buffer, st).at_offset(o.place.offset + t0 as u64 * st.token);
        // rem and log rem of this step: [B, H, n] after the earlier steps' (unpacked below).
        let region = (b * h * t0) as u64;
        let call = Decode::new(&cache, h, n, qp.tensor(&qb), o_step)
            .with_mask(mask)
            .with_scale(scale)
            .with_path(path)
            .with_early_exit(eps)
            .with_tuning(tuning)
            .with_log_rem(lrem_buf.at().at_offset(lrem_buf.offset + region))
            .with_remainder(match rem {
                Rem::Discard => Remainder::Discard,
                Rem::Return => Remainder::Return(rem_buf.at().at_offset(rem_buf.offset + region)),
                Rem::AddToValue => Remainder::AddToValue,
                Rem::AddBias => Remainder::AddBias(BufferRef::new(&bias_buf)),
            });
        attn.decode(&mut enc, &call).unwrap_or_else(|e| panic!("{what}: decode: {e}"));
        keep.extend([kb, vb, qb]);
        t0 += n;
    }
    let mut reads = vec![o.readback(), (&rem_buf.buffer, rem_buf.total as u64 * 4, Dtype::F32), (&lrem_buf.buffer, lrem_buf.total as u64 * 4, Dtype::F32)];
    if let Some((po, pl)) = &pre {
        reads.push(po.readback());
        reads.push((&pl.buffer, pl.total as u64 * 4, Dtype::F32));
    }
    let out = read(attn, enc, &reads);
    let got_o = o.values(&format!("{what} o"), &out[0]);
    let unstep = |x: &[f32]| {
        let mut y = vec![0.0; x.len()];
        let mut t0 = 0u32;
        for &n in &steps {
            for s in 0..b {
                for hh in 0..h {
                    for i in 0..n {
                        y[((s * h + hh) * decoded + t0 + i) as usize] = x[(b * h * t0 + (s * h + hh) * n + i) as usize];
                    }
                }
            }
            t0 += n;
        }
        y
    };
    let got_rem = unstep(&rem_buf.values(&format!("{what} rem"), &out[1]));
    let got_lrem = unstep(&lrem_buf.values(&format!("{what} log_rem"), &out[2]));
    // The reference: one forward per sequence over all its tokens; decoded rows are its last.
    let (hu, du, nd) = (h as usize, d as usize, decoded as usize);
    let (mut want_o, mut want_rem, mut want_lrem) = (Vec::new(), Vec::new(), Vec::new());
    let (mut pre_o, mut pre_lrem) = (Vec::new(), vec![Vec::new(); hu]);
    let mut max_v = if rem == Rem::AddBias { max_abs(&bias) } else { 0.0 };
    for (s, [q, k, v]) in seqs.iter().enumerate() {
        let t = total(s);
        max_v = max_v.max(max_abs(v));
        let shape = Shape::new().with_batch(1).with_seq_len(t).with_heads(h).with_kv_heads(hk).with_head_dim(d);
        let remainder = match rem {
            Rem::AddToValue => HostRemainder::AddToValue,
            Rem::AddBias => HostRemainder::AddBias(&bias),
            _ => HostRemainder::Return,
        };
        let r = reference::forward(&HostInput::new(shape, q, k, v).with_mask(mask).with_scale(scale).with_remainder(remainder)).unwrap();
        let p = prefill[s] as usize;
        want_o.extend_from_slice(&r.o[p * hu * du..(p + nd) * hu * du]);
        for hh in 0..hu {
            let row = hh * t as usize + p;
            want_rem.extend_from_slice(&r.rem[row..row + nd]);
            want_lrem.extend_from_slice(&r.log_rem[row..row + nd]);
        }
        if pre.is_some() {
            // The prefill rows with the remainder discarded (the call's default).
            let r = reference::forward(&HostInput::new(shape, q, k, v).with_mask(mask).with_scale(scale)).unwrap();
            pre_o.extend_from_slice(&r.o[..p * hu * du]);
            for (hh, l) in pre_lrem.iter_mut().enumerate() {
                l.extend_from_slice(&r.log_rem[hh * t as usize..hh * t as usize + p]);
            }
        }
    }
    // Tolerances of tests/decode.rs; early exit as its `early_exit_bound` test (5 eps max|v|).
    let f32_tol = 2e-5;
    let tol = if dtype == Dtype::F16 { 3e-3 } else { f32_tol };
    let e = compare(&format!("{what} o"), &got_o, &want_o);
    assert!(e.max_abs <= tol + 5.0 * eps as f64 * max_v, "{what}: o {e:?}");
    if rem == Rem::Return {
        let er = compare(&format!("{what} rem"), &got_rem, &want_rem);
        if eps == 0.0 {
            assert!(er.max_abs <= f32_tol, "{what}: rem {er:?}");
        } else {
            // An upper bound of the true remainder.
            assert!(got_rem.iter().zip(&want_rem).all(|(g, w)| *g as f64 >= w - f32_tol), "{what}: rem below the reference");
        }
    } else {
        assert!(got_rem.iter().all(|x| x.to_bits() == SENTINEL.to_bits()), "{what}: rem written without Remainder::Return");
    }
    compare(&format!("{what} log_rem"), &got_lrem, &want_lrem);
    let el = want_lrem.iter().zip(&got_lrem).map(|(w, g)| (*g as f64 - w) / w.abs().max(1.0)).fold(0.0, |m: f64, x| m.max(if eps == 0.0 { x.abs() } else { -x }));
    assert!(el <= f32_tol, "{what}: log_rem relative error {el}");
    if let Some((po, pl)) = &pre {
        let got = po.values(&format!("{what} prefill o"), &out[3]);
        let rel_round = if dtype == Dtype::F16 { 2f64.powi(-11) } else { 0.0 };
        check_close(&format!("{what} prefill o"), &got, &pre_o, rel_round, 0.0);
        let lrem = pl.values(&format!("{what} prefill log_rem"), &out[4]);
        let want: Vec<f64> = pre_lrem.concat(); // [H, total]
        check_close(&format!("{what} prefill log_rem"), &lrem, &want, 0.0, 0.0);
    }
    assert_eq!(cache.lengths(), (0..b as usize).map(total).collect::<Vec<_>>().as_slice());
    drop(keep);
    what
}

// ---------------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------------

fn backward_case(attn: &Attention, g: &mut G) -> String {
    let (dtype, path, d) = g.kernel(attn, &BACKWARD_PALETTE, |dt, d| {
        [KernelPath::Subgroup, KernelPath::SharedMemory].into_iter().filter(|p| attn.backward_variant(dt, d, *p).is_ok()).collect()
    });
    let (h, hk) = g.heads();
    let t = g.seq_len().min(200);
    let b = if t > 100 { 1 } else { g.range(1, 3) };
    let shape = Shape::new().with_batch(b).with_seq_len(t).with_heads(h).with_kv_heads(hk).with_head_dim(d);
    let (mask, rem) = (g.mask(), g.rem());
    // Scales as the forward cases, but saturating ones only rarely: the relative RMS bound
    // holds for gradients of the size of their terms (tests/backward.rs).
    let scale = g.scale();
    let inputs = Inputs::new(attn, g, shape, dtype, false);
    let bias = round_to(&g.normals((h * d) as usize, 1.0), dtype);
    let bias_buf = upload(attn, &bias, dtype);
    let d_o = round_to(&g.normals((b * t * h * d) as usize, 1.0), dtype);
    let d_rem: Vec<f32> = g.normals((b * h * t) as usize, 1.0);
    let rows = (b * h * t) as usize;
    // The forward: o and log rem saved (rem to a row buffer with Return).
    let o = Output::new(attn, g, [b, t, h], d, dtype);
    let rem_buf = RowBuf::new(attn, g, rows);
    let lrem_buf = RowBuf::new(attn, g, rows);
    let [q, k, v] = inputs.refs();
    // (On the backward's path: the forward kernel of the same dtype, path and head dims.)
    let fwd = Forward::new(shape, dtype, q, k, v, o.tensor())
        .with_path(path)
        .with_mask(mask)
        .with_scale(scale)
        .with_log_rem(lrem_buf.at())
        .with_remainder(match rem {
            Rem::Discard => Remainder::Discard,
            Rem::Return => Remainder::Return(rem_buf.at()),
            Rem::AddToValue => Remainder::AddToValue,
            Rem::AddBias => Remainder::AddBias(BufferRef::new(&bias_buf)),
        });
    // d_o placed like any input, the gradients like any output.
    let do_place = g.place(t, h, d, false);
    let mut do_host = host_buffer(do_place.end([b, t, h], d), f32::NAN);
    do_place.scatter(&mut do_host, &d_o, [b, t, h], d);
    let do_buf = upload(attn, &do_host, dtype);
    let drem_off = g.below(10);
    let mut drem_host = host_buffer(drem_off as usize + rows, f32::NAN);
    drem_host[drem_off as usize..].copy_from_slice(&d_rem);
    let drem_buf = upload(attn, &drem_host, Dtype::F32);
    let dq = Output::new(attn, g, [b, t, h], d, dtype);
    let dk = Output::new(attn, g, [b, t, hk], d, dtype);
    let dv = Output::new(attn, g, [b, t, hk], d, dtype);
    let dbias = RowBuf::new(attn, g, (h * d) as usize);
    let mut call = Backward::new(&fwd, do_place.tensor(&do_buf), dq.tensor(), dk.tensor(), dv.tensor()).with_path(path);
    if rem == Rem::Return {
        call = call.with_d_rem(BufferRef::new(&drem_buf).at_offset(drem_off));
    }
    if rem == Rem::AddBias {
        call = call.with_d_bias(dbias.at());
    }
    let what = format!("{} {mask:?} {rem:?} scale {scale:?} [{}]", label(dtype, path, shape), inputs.desc);
    starting(&what);
    let mut enc = attn.device().create_command_encoder(&Default::default());
    attn.forward(&mut enc, &fwd).unwrap_or_else(|e| panic!("{what}: forward: {e}"));
    attn.backward(&mut enc, &call).unwrap_or_else(|e| panic!("{what}: backward: {e}"));
    let out = read(attn, enc, &[dq.readback(), dk.readback(), dv.readback(), (&dbias.buffer, dbias.total as u64 * 4, Dtype::F32)]);
    let got = [dq.values(&format!("{what} dq"), &out[0]), dk.values(&format!("{what} dk"), &out[1]), dv.values(&format!("{what} dv"), &out[2])];
    let got_dbias = dbias.values(&format!("{what} dbias"), &out[3]);
    let input = HostInput::new(shape, &inputs.q, &inputs.k, &inputs.v).with_mask(mask).with_scale(scale).with_remainder(rem.host(&bias));
    let d_rem_ref = (rem == Rem::Return).then_some(&d_rem[..]);
    let want = reference::backward(&input, &d_o, d_rem_ref).unwrap();
    let mag = grad::magnitudes(&input, &d_o);
    // The relative RMS bound is for gradients of the size of their terms: unsaturated logits.
    let rms = scale.is_none_or(|s| s.abs() * (d as f32).sqrt() <= 1.0);
    let mut worst = 0.0f64;
    for (name, got, want, mag) in [("dq", &got[0], &want.dq, &mag.dq), ("dk", &got[1], &want.dk, &mag.dk), ("dv", &got[2], &want.dv, &mag.dv)] {
        worst = worst.max(grad::check_grad(&format!("{what} {name}"), got, want, mag, dtype, rms).0);
    }
    match (&want.dbias, &mag.dbias) {
        (Some(w), Some(m)) => {
            worst = worst.max(grad::check_grad(&format!("{what} dbias"), &got_dbias, w, m, Dtype::F32, rms).0);
        }
        _ => assert!(got_dbias.iter().all(|x| x.to_bits() == SENTINEL.to_bits()), "{what}: d_bias written without AddBias"),
    }
    format!("{what}: max |err| / (eps scale) {worst:.2}")
}
