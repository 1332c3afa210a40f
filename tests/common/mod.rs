//! Shared by the GPU tests: the device, random data and comparisons.
#![allow(dead_code)]

use std::sync::OnceLock;

use sbattn::Attention;

/// The shared device. Without an adapter the test fails, unless `SBATTN_ALLOW_NO_GPU=1`
/// asks for a skip (then `None`, and the caller returns early, printing why).
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

/// Deterministic standard normal samples (SplitMix64 + Box-Muller).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    pub fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
    }
    pub fn normals(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.normal() * scale).collect()
    }
}

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
