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

mod common;

use common::{check_close, Rng};
use sbattn::{reference, round_to, Attention, Dtype, Error, HostInput, HostRemainder, KernelPath, Layout, Mask, Shape};
use wasm_bindgen_test::{console_log, wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

/// A device per test: each test is its own future, and creating one takes milliseconds.
async fn attention() -> Attention {
    Attention::with_default_adapter()
        .await
        .unwrap_or_else(|e| panic!("no WebGPU adapter ({e}); is Chromium started with --enable-unsafe-webgpu?"))
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
    let nq = (s.batch() * s.seq_len() * s.heads() * s.head_dim()) as usize;
    let nkv = (s.batch() * s.seq_len() * s.kv_heads() * s.head_dim()) as usize;
    let mut rng = Rng::new(seed);
    let q = round_to(&rng.normals(nq, 1.0), dtype);
    let k = round_to(&rng.normals(nkv, 1.0), dtype);
    let v = round_to(&rng.normals(nkv, 1.0), dtype);
    let bias = round_to(&rng.normals((s.heads() * s.head_dim()) as usize, 1.0), dtype);
    let remainder = match rem {
        Rem::Discard => HostRemainder::Discard,
        Rem::Return => HostRemainder::Return,
        Rem::AddToValue => HostRemainder::AddToValue,
        Rem::AddBias => HostRemainder::AddBias(&bias),
    };
    let input = HostInput::new(s, &q, &k, &v).with_layout(layout).with_dtype(dtype).with_mask(mask).with_remainder(remainder);
    let want = reference::forward(&input).unwrap();
    let got = attn.run_host(&input).await.unwrap();
    let rel_round = if dtype == Dtype::F16 { 2f64.powi(-11) } else { 0.0 };
    let (err, _) = check_close(&format!("{label} o"), &got.o, &want.o, rel_round, 0.0);
    check_close(&format!("{label} log_rem"), &got.log_rem, &want.log_rem, 0.0, 0.0);
    assert_eq!(got.rem.is_some(), matches!(rem, Rem::Return), "{label}: rem returned only when asked");
    if let Some(r) = &got.rem {
        check_close(&format!("{label} rem"), r, &want.rem, 0.0, 0.0);
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
        caps.name,
        caps.backend,
        caps.device_type,
        caps.subgroup_min_size,
        caps.subgroup_max_size,
        caps.f16(),
        caps.features.contains(wgpu::Features::SUBGROUP)
    );
    assert_eq!(caps.backend, wgpu::Backend::BrowserWebGpu);
    assert_eq!(attn.forward_variant(Dtype::F32, 64, KernelPath::Auto).unwrap().path, KernelPath::SharedMemory);
    assert!(matches!(attn.forward_variant(Dtype::F32, 64, KernelPath::Subgroup), Err(Error::Unsupported(_))));
}

/// Odd sequence lengths and head dims, both layouts and both masks, multi-head.
#[wasm_bindgen_test]
async fn forward_odd_shapes() {
    let attn = attention().await;
    let shapes = [
        Shape::new().with_batch(1).with_seq_len(1).with_heads(1).with_head_dim(16),
        Shape::new().with_batch(1).with_seq_len(2).with_heads(1).with_head_dim(7),
        Shape::new().with_batch(2).with_seq_len(37).with_heads(3).with_head_dim(24),
        Shape::new().with_batch(1).with_seq_len(63).with_heads(2).with_head_dim(50),
        Shape::new().with_batch(1).with_seq_len(65).with_heads(1).with_head_dim(80),
        Shape::new().with_batch(1).with_seq_len(111).with_heads(2).with_head_dim(100),
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
            let shape = Shape::new().with_batch(2).with_seq_len(45).with_heads(h).with_head_dim(40).with_kv_heads(hk);
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
            let shape = Shape::new().with_batch(1).with_seq_len(41).with_heads(4).with_head_dim(32).with_kv_heads(2);
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
        let a = attn.capabilities();
        console_log!(
            "SKIPPED f16 forward: this adapter ({:?}, {:?}) lacks shader-f16 (SwiftShader never has it)",
            a.name,
            a.device_type
        );
        let shape = Shape::new().with_batch(1).with_seq_len(8).with_heads(1).with_head_dim(16);
        let x = vec![0.0; 8 * 16];
        let input = HostInput::new(shape, &x, &x, &x).with_dtype(Dtype::F16);
        assert!(matches!(attn.run_host(&input).await, Err(Error::Unsupported(_))));
        return;
    }
    let mut seed = 400;
    for (rem, layout) in [(Rem::Return, Layout::Bthd), (Rem::AddBias, Layout::Bhtd)] {
        seed += 10;
        let shape = Shape::new().with_batch(1).with_seq_len(53).with_heads(4).with_head_dim(48).with_kv_heads(2);
        run_case(&attn, shape, layout, Dtype::F16, Mask::Strict, rem, seed).await;
    }
}

/// Bad input comes back as an error in the browser too, not as a panic or a device error.
#[wasm_bindgen_test]
async fn bad_input_is_an_error() {
    let attn = attention().await;
    let shape = Shape::new().with_batch(1).with_seq_len(8).with_heads(3).with_head_dim(16).with_kv_heads(2);
    let x = vec![0.0; 8 * 3 * 16];
    let input = HostInput::new(shape, &x, &x, &x);
    assert!(matches!(attn.run_host(&input).await, Err(Error::HeadsNotDivisible { .. })));
}

/// The browser compiles the kernels itself (Chromium's Tint), with a stricter uniformity
/// analysis than naga's (a module-scope variable never counts as uniform): a forward call must
/// raise no validation error, and compute.
#[wasm_bindgen_test]
async fn browser_accepts_the_kernels() {
    let attn = attention().await;
    let s = Shape::new().with_batch(1).with_seq_len(1).with_heads(1).with_head_dim(16);
    let x = vec![0.5f32; 16];
    let scope = attn.device().push_error_scope(wgpu::ErrorFilter::Validation);
    let got = attn.run_host(&HostInput::new(s, &x, &x, &x).with_remainder(HostRemainder::Return)).await.expect("forward");
    let err = scope.pop().await;
    assert!(err.is_none(), "validation error: {err:?}");
    assert_eq!(got.rem, Some(vec![1.0]), "the first row sees no key: its stick is whole");
}
