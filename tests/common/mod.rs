//! Shared by the GPU tests: the device, random data, comparisons and buffer helpers.
#![allow(dead_code, unused_imports)]

pub mod grad;

use sbattn::{Attention, Dtype, HostRemainder, KernelPath};
#[cfg(not(target_arch = "wasm32"))]
use sbattn::{from_bytes, Readback};
#[cfg(not(target_arch = "wasm32"))]
use std::sync::OnceLock;

/// `SBATTN_FULL_TESTS=1`: the long grids (the GPU machine's runs, `scripts/device-bench.sh`, and
/// long runs here). By default the tests are sized for CI on lavapipe (2 cores, every kernel
/// compiled cold at its first dispatch); each test that runs less by default says what it
/// leaves out.
pub fn full_tests() -> bool {
    std::env::var("SBATTN_FULL_TESTS").is_ok_and(|v| v == "1")
}

/// The shared device (native). Without an adapter the test fails, unless `SBATTN_ALLOW_NO_GPU=1` asks
/// for a skip (then `None`, and the caller returns early, printing why).
#[cfg(not(target_arch = "wasm32"))]
pub fn attention() -> Option<&'static Attention> {
    static ATTN: OnceLock<Result<Attention, String>> = OnceLock::new();
    let r = ATTN.get_or_init(|| Attention::with_default_adapter_blocking().map_err(|e| e.to_string()));
    match r {
        Ok(a) => Some(a),
        Err(e) if std::env::var("SBATTN_ALLOW_NO_GPU").as_deref() == Ok("1") => {
            eprintln!("SKIPPED (SBATTN_ALLOW_NO_GPU=1): {e}");
            None
        }
        Err(e) => panic!("no GPU adapter ({e}); set SBATTN_ALLOW_NO_GPU=1 to skip GPU tests"),
    }
}

/// Returns from the test when the GPU tests are explicitly skipped.
#[macro_export]
macro_rules! gpu_or_skip {
    () => {
        match common::attention() {
            Some(a) => a,
            None => return,
        }
    };
}

/// Every forward kernel path (the emulated tensor-core kernel included).
pub const ALL_PATHS: [KernelPath; 4] =
    [KernelPath::Subgroup, KernelPath::SharedMemory, KernelPath::CooperativeMatrix, KernelPath::EmulatedCooperativeMatrix];

/// Every forward path this device can run for `dtype` at head dim `d` (at least one).
pub fn paths(attn: &Attention, dtype: Dtype, d: u32) -> Vec<KernelPath> {
    let ok: Vec<KernelPath> = ALL_PATHS.into_iter().filter(|p| attn.forward_variant(dtype, d, *p).is_ok()).collect();
    assert!(!ok.is_empty(), "no path for {dtype:?} D {d}");
    ok
}

/// `x` after `f` (a field or two changed on a call struct that cannot be built by name).
pub fn tweak<T>(mut x: T, f: impl FnOnce(&mut T)) -> T {
    f(&mut x);
    x
}

pub use sbattn::reference::Rng;

/// Max absolute error, relative RMS error, and the max of |ref|.
#[derive(Debug, Clone, Copy)]
pub struct Errors {
    pub max_abs: f64,
    pub rel_rms: f64,
    pub ref_max: f64,
}

/// Compares `got` with `want`; panics on NaN/inf in either (a NaN reference is a bug too).
pub fn compare(what: &str, got: &[f32], want: &[f64]) -> Errors {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let (mut max_abs, mut se, mut sr, mut ref_max) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(w.is_finite(), "{what}: reference[{i}] = {w} is not finite");
        assert!(g.is_finite(), "{what}: gpu[{i}] = {g} is not finite (reference {w})");
        let e = (g as f64 - w).abs();
        max_abs = max_abs.max(e);
        se += e * e;
        sr += w * w;
        ref_max = ref_max.max(w.abs());
    }
    let rel_rms = if sr > 0.0 { (se / sr).sqrt() } else { se.sqrt() };
    Errors { max_abs, rel_rms, ref_max }
}

/// Element-wise bound `|got - want| <= rel * |want| + 2e-5 (1 + |want|) + abs` (see
/// tests/forward.rs for where each term comes from); returns the max error and relative RMS.
pub fn check_close(what: &str, got: &[f32], want: &[f64], rel: f64, abs: f64) -> (f64, f64) {
    let e = compare(what, got, want);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = rel * w.abs() + 2e-5 * (1.0 + w.abs()) + abs;
        assert!((g as f64 - w).abs() <= tol, "{what}[{i}]: gpu {g} vs reference {w} (tol {tol:e})");
    }
    (e.max_abs, e.rel_rms)
}

/// A storage buffer holding `data` as `dtype`.
pub fn buffer(attn: &Attention, data: &[f32], dtype: Dtype) -> wgpu::Buffer {
    sbattn::upload(attn.device(), "test input", data, dtype)
}

/// A zeroed storage buffer of `bytes`.
pub fn zeros(attn: &Attention, bytes: u64) -> wgpu::Buffer {
    sbattn::zeroed(attn.device(), "test output", bytes)
}

/// A buffer of `bytes` with only `usage`.
pub fn plain(attn: &Attention, bytes: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
    attn.device().create_buffer(&wgpu::BufferDescriptor { label: None, size: bytes, usage, mapped_at_creation: false })
}

/// Submits `encoder` and reads back `(buffer, bytes, dtype)` each as f32 values (native).
#[cfg(not(target_arch = "wasm32"))]
pub fn read(attn: &Attention, encoder: wgpu::CommandEncoder, bufs: &[(&wgpu::Buffer, u64, Dtype)]) -> Vec<Vec<f32>> {
    let mut encoder = encoder;
    let dev = attn.device();
    let rb: Vec<_> = bufs.iter().map(|(b, len, _)| Readback::record(dev, &mut encoder, b, *len)).collect();
    attn.queue().submit([encoder.finish()]);
    rb.into_iter().zip(bufs).map(|(r, (_, _, dt))| from_bytes(&r.read_blocking(dev).expect("readback"), *dt)).collect()
}

/// Submits `encoder` and reads back `bytes` of `buffer` as u32 words (native).
#[cfg(not(target_arch = "wasm32"))]
pub fn read_u32(attn: &Attention, encoder: wgpu::CommandEncoder, buffer: &wgpu::Buffer, bytes: u64) -> Vec<u32> {
    read(attn, encoder, &[(buffer, bytes, Dtype::F32)]).remove(0).iter().map(|x| x.to_bits()).collect()
}

/// What [`gather`] fills missing tokens with: a value no test input has, so a kernel that reads
/// a token it must not see gives a visibly wrong answer.
pub const PAD: f32 = 100.0;

/// Tokens `[from, from + n)` of each sequence, concatenated (a dense `[B, n, ..]` tensor when
/// every `n` is equal, a packed one otherwise); `width` elements per token; sequences shorter
/// than `from + n` are padded with [`PAD`].
pub fn gather(seqs: &[Vec<f32>], spans: &[(u32, u32)], width: usize) -> Vec<f32> {
    let mut out = Vec::new();
    for (s, &(from, n)) in seqs.iter().zip(spans) {
        for t in from..from + n {
            let at = t as usize * width;
            match s.get(at..at + width) {
                Some(x) => out.extend_from_slice(x),
                None => out.extend(std::iter::repeat_n(PAD, width)),
            }
        }
    }
    out
}

/// Remainder handling of a case, host side (the four `Remainder` modes without their buffers).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rem {
    Discard,
    Return,
    AddToValue,
    AddBias,
}

/// Every remainder mode.
pub const REMS: [Rem; 4] = [Rem::Discard, Rem::Return, Rem::AddToValue, Rem::AddBias];

impl Rem {
    /// The host-side mode, with `bias` for `AddBias`.
    pub fn host<'a>(&self, bias: &'a [f32]) -> HostRemainder<'a> {
        match self {
            Rem::Discard => HostRemainder::Discard,
            Rem::Return => HostRemainder::Return,
            Rem::AddToValue => HostRemainder::AddToValue,
            Rem::AddBias => HostRemainder::AddBias(bias),
        }
    }
}

/// Gives every sequence of a paged `cache` all the pages its capacity needs, drawn from the pool
/// in a seeded shuffled order (a sequence's pages are scattered over the pool, out of order),
/// and submits that.
pub fn shuffle_pages(attn: &Attention, cache: &mut sbattn::KvCache, seed: u64) {
    let desc = *cache.desc();
    let pool = desc.paging.expect("a paged cache").num_pages;
    let max = desc.max_pages() as usize;
    let mut order: Vec<u32> = (0..pool).collect();
    let mut rng = Rng::new(seed);
    for i in (1..order.len()).rev() {
        order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    assert!(order.len() >= desc.batch as usize * max, "a pool of {pool} pages for {} sequences of {max}", desc.batch);
    let mut enc = attn.device().create_command_encoder(&Default::default());
    for (b, pages) in order.chunks(max).take(desc.batch as usize).enumerate() {
        cache.set_pages(attn, &mut enc, b as u32, pages).expect("pages");
    }
    attn.queue().submit([enc.finish()]);
}
