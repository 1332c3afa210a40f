//! Faults never panic: a destroyed (lost) device makes every call return `Error::DeviceLost`
//! and a fresh context on a new device works; buffers past the device's limit are an error;
//! a device error keeps wgpu's error as its `source()`.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::error::Error as _;

use sbattn::{Append, Attention, Decode, Dtype, Error, Forward, HostInput, KvCache, KvCacheDesc, Shape, TensorRef};

/// A context on a device of its own (these tests break their devices).
fn own() -> Option<Attention> {
    common::attention()?;
    Some(Attention::with_default_adapter_blocking().expect("second device"))
}

#[test]
fn destroyed_device_gives_device_lost_everywhere() {
    let Some(attn) = own() else { return };
    let shape = Shape::new().with_seq_len(16).with_heads(2).with_head_dim(16);
    let x = vec![0.25f32; 16 * 2 * 16];
    let input = HostInput::new(shape, &x, &x, &x);
    attn.run_host_blocking(&input).expect("works before");
    let buf = attn.zeroed("before", 4096).expect("buffer");
    let out = attn.zeroed("out", 4096).expect("buffer");
    let mut cache = KvCache::new(&attn, KvCacheDesc::new(1, 2, 16, 32, Dtype::F32)).expect("cache");

    attn.device().destroy();
    assert!(attn.is_lost());
    let lost = |r: Result<(), Error>, what: &str| {
        assert!(matches!(r, Err(Error::DeviceLost(_))), "{what}: {r:?}");
    };
    lost(attn.run_host_blocking(&input).map(|_| ()), "run_host");
    lost(attn.zeroed("after", 64).map(|_| ()), "zeroed");
    lost(attn.upload("after", &x, Dtype::F32).map(|_| ()), "upload");
    lost(KvCache::new(&attn, KvCacheDesc::new(1, 2, 16, 32, Dtype::F32)).map(|_| ()), "KvCache::new");
    let t = TensorRef::bthd(&buf);
    let mut enc = attn.device().create_command_encoder(&Default::default());
    lost(attn.forward(&mut enc, &Forward::new(shape, Dtype::F32, t, t, t, TensorRef::bthd(&out))), "forward");
    lost(attn.append(&mut enc, &mut cache, &Append::new(t, t, 1)), "append");
    lost(cache.set_lengths(&attn, &mut enc, &[1]), "set_lengths");
    lost(attn.decode(&mut enc, &Decode::new(&cache, 2, 1, t, TensorRef::bthd(&out))), "decode");

    // A new device works.
    let fresh = Attention::with_default_adapter_blocking().expect("new device");
    fresh.run_host_blocking(&input).expect("a fresh context works");
}

#[test]
fn buffers_past_the_limit_are_errors() {
    let Some(attn) = own() else { return };
    let limit = attn.capabilities().limits.max_buffer_size;
    let e = attn.zeroed("huge", limit + 1).unwrap_err();
    assert!(matches!(e, Error::Limit { what: "buffer size", .. }), "{e:?}");
    let e = attn.create_buffer("huge", u64::MAX, wgpu::BufferUsages::STORAGE).unwrap_err();
    assert!(matches!(e, Error::Limit { .. }), "{e:?}");
    // A cache too large for one buffer.
    let e = KvCache::new(&attn, KvCacheDesc::new(1 << 16, 64, 256, 1 << 20, Dtype::F32)).unwrap_err();
    assert!(matches!(e, Error::Limit { .. }), "{e:?}");
    // The context still works.
    let shape = Shape::new().with_seq_len(4).with_head_dim(8);
    let x = vec![0.5f32; 32];
    attn.run_host_blocking(&HostInput::new(shape, &x, &x, &x)).expect("still works");
}

/// A buffer the caller destroyed makes the device reject the call's bind group: an
/// `Error::Device` whose source is wgpu's error, not a panic.
#[test]
fn device_errors_keep_their_source() {
    let Some(attn) = own() else { return };
    let shape = Shape::new().with_seq_len(16).with_heads(2).with_head_dim(16);
    let bufs: Vec<wgpu::Buffer> = (0..4).map(|_| attn.zeroed("t", 16 * 2 * 16 * 4).unwrap()).collect();
    bufs[1].destroy();
    let t = |i: usize| TensorRef::bthd(&bufs[i]);
    let mut enc = attn.device().create_command_encoder(&Default::default());
    let e = attn.forward(&mut enc, &Forward::new(shape, Dtype::F32, t(0), t(1), t(2), t(3))).unwrap_err();
    assert!(matches!(e, Error::Device { .. }), "{e:?}");
    let source = e.source().expect("wgpu's error as source");
    eprintln!("{e}\nsource: {source}");
    assert!(!attn.is_lost());
}
