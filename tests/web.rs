//! The forward kernel in a real browser (headless Chromium's WebGPU, SwiftShader here) against
//! the f64 reference: odd shapes, both layouts and masks, grouped- and multi-query heads, every
//! remainder mode, f16 where the adapter offers `shader-f16`.
//!
//! Run with `scripts/test-web.sh` (it installs what it needs). Sizes stay small: SwiftShader
//! is a CPU rasteriser.
//!
//! Tolerances are those of `tests/forward.rs`: per element `|gpu - w| <= r * |w| + 2e-5 * (1 +
//! |w|)` with `r = 2^-11` for f16 output (half an f16 ulp) and 0 for f32; `rem` and `log rem`
//! are f32 in both dtypes. Any NaN or infinity fails.
#![cfg(target_arch = "wasm32")]

use sbattn::{reference, round_to, Attention, Dtype, Error, HostInput, HostRemainder, Layout, Mask, Path, Shape};
use wasm_bindgen_test::{console_log, wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

/// A device per test: each test is its own future, and creating one takes milliseconds.
async fn attention() -> Attention {
    Attention::with_default_adapter()
        .await
        .unwrap_or_else(|e| panic!("no WebGPU adapter ({e}); is Chromium started with --enable-unsafe-webgpu?"))
}

/// Deterministic values in [-1, 1) (a 64-bit LCG, top bits).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Checks every element against the tolerance above; returns the max absolute error.
fn check(what: &str, got: &[f32], want: &[f64], rel_round: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut max = 0.0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(w.is_finite(), "{what}[{i}]: reference {w} is not finite");
        assert!(g.is_finite(), "{what}[{i}]: gpu {g} is not finite (reference {w})");
        let err = (g as f64 - w).abs();
        let tol = rel_round * w.abs() + 2e-5 * (1.0 + w.abs());
        assert!(err <= tol, "{what}[{i}]: gpu {g} vs reference {w} (tol {tol:e})");
        max = max.max(err);
    }
    max
}

/// What a case does with the remainder (the bias is generated per case).
#[derive(Clone, Copy, Debug)]
enum Rem {
    Discard,
    Return,
    AddToValue,
    AddBias,
}

/// Runs one case with the automatic path and checks o, rem and log rem.
async fn run_case(attn: &Attention, shape: Shape, layout: Layout, dtype: Dtype, mask: Mask, rem: Rem, seed: u64) {
    let s = shape;
    let label = format!("{s:?} {layout:?} {dtype:?} {mask:?} {rem:?}");
    let nq = (s.batch * s.seq_len * s.heads * s.head_dim) as usize;
    let nkv = (s.batch * s.seq_len * s.kv_heads * s.head_dim) as usize;
    let q = round_to(&values(nq, seed), dtype);
    let k = round_to(&values(nkv, seed + 1), dtype);
    let v = round_to(&values(nkv, seed + 2), dtype);
    let bias = round_to(&values((s.heads * s.head_dim) as usize, seed + 3), dtype);
    let remainder = match rem {
        Rem::Discard => HostRemainder::Discard,
        Rem::Return => HostRemainder::Return,
        Rem::AddToValue => HostRemainder::AddToValue,
        Rem::AddBias => HostRemainder::AddBias(&bias),
    };
    let want = reference::forward(&s, layout, &q, &k, &v, mask, None, &remainder).unwrap();
    let input = HostInput { layout, dtype, mask, remainder, ..HostInput::new(s, &q, &k, &v) };
    let got = attn.run_host(&input).await.unwrap();
    let rel_round = if dtype == Dtype::F16 { 2f64.powi(-11) } else { 0.0 };
    let err = check(&format!("{label} o"), &got.o, &want.o, rel_round);
    check(&format!("{label} log_rem"), &got.log_rem, &want.log_rem, 0.0);
    assert_eq!(got.rem.is_some(), matches!(rem, Rem::Return), "{label}: rem returned only when asked");
    if let Some(r) = &got.rem {
        check(&format!("{label} rem"), r, &want.rem, 0.0);
    }
    console_log!("{label}: max |err| {err:.2e}");
}

/// wgpu 30's WebGPU backend cannot request subgroups, so the automatic path is the
/// shared-memory scan, and forcing the subgroup path is refused rather than miscompiled.
#[wasm_bindgen_test]
async fn browser_runs_the_shared_memory_path() {
    let attn = attention().await;
    let caps = attn.capabilities();
    console_log!(
        "adapter: {:?} ({:?}, {:?}, subgroup sizes {}..={}), shader-f16: {}, subgroups on the device: {}",
        caps.adapter.name,
        caps.adapter.backend,
        caps.adapter.device_type,
        caps.adapter.subgroup_min_size,
        caps.adapter.subgroup_max_size,
        caps.f16(),
        caps.features.contains(wgpu::Features::SUBGROUP)
    );
    assert_eq!(caps.adapter.backend, wgpu::Backend::BrowserWebGpu);
    assert_eq!(attn.plan(Dtype::F32, 64, Path::Auto).unwrap().path, Path::SharedMemory);
    assert!(matches!(attn.plan(Dtype::F32, 64, Path::Subgroup), Err(Error::Unsupported(_))));
}

/// Odd sequence lengths and head dims, both layouts and both masks, multi-head.
#[wasm_bindgen_test]
async fn forward_odd_shapes() {
    let attn = attention().await;
    let shapes = [
        Shape::new(1, 1, 1, 16),
        Shape::new(1, 2, 1, 7),
        Shape::new(2, 37, 3, 24),
        Shape::new(1, 63, 2, 50),
        Shape::new(1, 65, 1, 80),
        Shape::new(1, 111, 2, 100),
    ];
    let mut seed = 10;
    for (n, shape) in shapes.into_iter().enumerate() {
        for mask in [Mask::Strict, Mask::IncludeCurrent] {
            let layout = if n % 2 == 0 { Layout::Bthd } else { Layout::Bhtd };
            seed += 10;
            run_case(&attn, shape, layout, Dtype::F32, mask, Rem::Return, seed).await;
        }
    }
}

/// Grouped-query (6 query heads on 2 key/value heads) and multi-query (4 on 1), both layouts.
#[wasm_bindgen_test]
async fn forward_grouped_and_multi_query() {
    let attn = attention().await;
    let mut seed = 200;
    for (h, hk) in [(6, 2), (4, 1)] {
        for layout in [Layout::Bthd, Layout::Bhtd] {
            seed += 10;
            let shape = Shape::new(2, 45, h, 40).with_kv_heads(hk);
            run_case(&attn, shape, layout, Dtype::F32, Mask::IncludeCurrent, Rem::Return, seed).await;
        }
    }
}

/// Discard, return, add-to-value and add-bias, with each mask.
#[wasm_bindgen_test]
async fn forward_remainder_modes() {
    let attn = attention().await;
    let mut seed = 300;
    for rem in [Rem::Discard, Rem::Return, Rem::AddToValue, Rem::AddBias] {
        for mask in [Mask::Strict, Mask::IncludeCurrent] {
            seed += 10;
            let shape = Shape::new(1, 41, 4, 32).with_kv_heads(2);
            run_case(&attn, shape, Layout::Bthd, Dtype::F32, mask, rem, seed).await;
        }
    }
}

/// f16 storage where the adapter offers `shader-f16`; otherwise a visible skip, and a check
/// that the call is refused with [`Error::Unsupported`] instead of failing on the device.
#[wasm_bindgen_test]
async fn forward_f16_where_offered() {
    let attn = attention().await;
    if !attn.capabilities().f16() {
        let a = &attn.capabilities().adapter;
        console_log!(
            "SKIPPED f16 forward: this adapter ({:?}, {:?}) lacks shader-f16 (SwiftShader never has it)",
            a.name,
            a.device_type
        );
        let shape = Shape::new(1, 8, 1, 16);
        let x = vec![0.0; 8 * 16];
        let input = HostInput { dtype: Dtype::F16, ..HostInput::new(shape, &x, &x, &x) };
        assert!(matches!(attn.run_host(&input).await, Err(Error::Unsupported(_))));
        return;
    }
    let mut seed = 400;
    for (rem, layout) in [(Rem::Return, Layout::Bthd), (Rem::AddBias, Layout::Bhtd)] {
        seed += 10;
        let shape = Shape::new(1, 53, 4, 48).with_kv_heads(2);
        run_case(&attn, shape, layout, Dtype::F16, Mask::Strict, rem, seed).await;
    }
}

/// Bad input comes back as an error in the browser too, not as a panic or a device error.
#[wasm_bindgen_test]
async fn bad_input_is_an_error() {
    let attn = attention().await;
    let shape = Shape::new(1, 8, 3, 16).with_kv_heads(2);
    let x = vec![0.0; 8 * 3 * 16];
    let input = HostInput::new(shape, &x, &x, &x);
    assert!(matches!(attn.run_host(&input).await, Err(Error::HeadsNotDivisible { .. })));
}
