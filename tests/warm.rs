//! Compiling ahead (`Attention::warm_up`) and the persistent pipeline cache
//! (`Attention::with_pipeline_cache`, `pipeline_cache_data`, the file helpers): saved data is
//! taken back by a new context on the same device, data that is damaged, truncated, foreign or
//! unreadable is refused (and the context still works), and warm-up compiles each pipeline once,
//! so that the first call compiles nothing. Only pipeline creation and one small weights
//! dispatch: no forward dispatch (lavapipe compiles a kernel's machine code at its first
//! dispatch, seconds each).
#![cfg(not(target_arch = "wasm32"))]

mod common;

use sbattn::{Attention, Dtype, HostInput, Kernel, KernelPath, PipelineCacheStatus, Shape};

/// A context of its own (the persistent cache is set when building one).
fn own() -> Option<Attention> {
    common::attention()?;
    Some(Attention::with_default_adapter_blocking().expect("own context"))
}

/// A small weights call: works, and is right (rows plus rem make up the stick).
fn weights_work(attn: &Attention) {
    let shape = Shape::new().with_seq_len(9).with_head_dim(4);
    let q: Vec<f32> = (0..36).map(|i| (i as f32 * 0.37).sin()).collect();
    let k: Vec<f32> = (0..36).map(|i| (i as f32 * 0.91).cos()).collect();
    let w = attn.weights_host_blocking(&HostInput::new(shape, &q, &k, &[0.0; 36]), 0, 0).expect("weights");
    let row: f32 = w.row(8).iter().sum::<f32>() + w.rem[8];
    assert!((row - 1.0).abs() < 1e-5, "{row}");
}

#[test]
fn pipeline_cache_round_trip_and_refusals() {
    let Some(attn) = own() else { return };
    if !attn.capabilities().features.contains(wgpu::Features::PIPELINE_CACHE) {
        assert_eq!(attn.pipeline_cache_key(), None);
        let attn = attn.with_pipeline_cache(None);
        assert_eq!(attn.pipeline_cache_status(), PipelineCacheStatus::Unsupported);
        assert_eq!(attn.pipeline_cache_data(), None);
        weights_work(&attn);
        eprintln!("no PIPELINE_CACHE on this device: only the unsupported case was tested");
        return;
    }
    assert_eq!(attn.pipeline_cache_status(), PipelineCacheStatus::Off, "off unless asked for");
    assert_eq!(attn.pipeline_cache_data(), None);
    let key = attn.pipeline_cache_key().expect("a key");
    assert!(key.starts_with(&format!("sbattn-{}-", env!("CARGO_PKG_VERSION"))), "{key}");
    assert!(key.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)), "file-name safe: {key}");

    let attn = attn.with_pipeline_cache(None);
    assert_eq!(attn.pipeline_cache_status(), PipelineCacheStatus::Empty);
    weights_work(&attn);
    let data = attn.pipeline_cache_data().expect("data");

    let fresh = || Attention::with_default_adapter_blocking().expect("context");
    let loaded = fresh().with_pipeline_cache(Some(&data));
    assert_eq!(loaded.pipeline_cache_status(), PipelineCacheStatus::Loaded { bytes: data.len() });
    assert_eq!(loaded.pipeline_cache_key(), Some(key));
    weights_work(&loaded);

    let refused = |bytes: &[u8], why: &str| {
        let a = fresh().with_pipeline_cache(Some(bytes));
        match a.pipeline_cache_status() {
            PipelineCacheStatus::Rejected(r) => assert!(r.contains(why), "{r:?} should say {why:?}"),
            s => panic!("{s:?}: data that should say {why:?} was taken"),
        }
        weights_work(&a);
        assert!(a.pipeline_cache_data().is_some(), "a refused cache starts empty, and saves");
    };
    let mut damaged = data.clone();
    *damaged.last_mut().expect("not empty") ^= 1;
    refused(&damaged, "damaged");
    refused(&data[..data.len() - 1], "damaged");
    refused(b"not a cache at all, but long enough to have a header", "not sbattn");
    let mut foreign = data.clone();
    foreign[16] ^= 0xff; // the key hash: another adapter, driver or version
    refused(&foreign, "another adapter");

    let dir = std::env::temp_dir().join(format!("sbattn-warm-test-{}", std::process::id()));
    let path = dir.join("nested").join("cache.bin");
    let from_missing = fresh().with_pipeline_cache_file(&path);
    assert_eq!(from_missing.pipeline_cache_status(), PipelineCacheStatus::Empty, "a missing file is an empty cache");
    assert!(loaded.save_pipeline_cache(&path).expect("saved"), "folders are created");
    let from_file = fresh().with_pipeline_cache_file(&path);
    assert!(matches!(from_file.pipeline_cache_status(), PipelineCacheStatus::Loaded { .. }));
    let from_dir = fresh().with_pipeline_cache_file(&dir);
    assert!(matches!(from_dir.pipeline_cache_status(), PipelineCacheStatus::Rejected(r) if r.contains("reading")));
    assert!(!fresh().save_pipeline_cache(dir.join("none.bin")).expect("nothing to save"), "no cache, nothing written");
    assert!(!dir.join("none.bin").exists());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn warm_up_compiles_each_pipeline_once() {
    let Some(attn) = own() else { return };
    let mut kernels = vec![
        Kernel::Weights(Dtype::F32),
        Kernel::Append(Dtype::F32),
        attn.forward_variant(Dtype::F32, 16, KernelPath::Auto).expect("forward").into(),
        attn.backward_variant(Dtype::F32, 16, KernelPath::Auto).expect("backward").into(),
        Kernel::Weights(Dtype::F32), // twice: compiled once
    ];
    let mut want = 1 + 2 + 1 + 4;
    if attn.capabilities().f16() {
        kernels.push(Kernel::Weights(Dtype::F16));
        want += 1;
    }
    assert_eq!(attn.warm_up(&kernels).expect("warm-up"), want);
    assert_eq!(attn.compiled_kernels(), want);
    assert_eq!(attn.warm_up(&kernels).expect("again"), 0, "nothing left to compile");
    weights_work(&attn);
    assert_eq!(attn.compiled_kernels(), want, "the first call compiled nothing");
    assert_eq!(attn.warm_up(&[]).expect("nothing"), 0);
}
