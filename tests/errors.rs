//! Every bad input gets its own clear `Error`, before anything is encoded (the encoder stays
//! usable and submits cleanly afterwards).
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::tweak;
use sbattn::{Attention, BufferRef, Dtype, Error, Forward, KernelPath, Remainder, Shape, Strides, TensorRef};

const T: u32 = 10;
const H: u32 = 2;
const D: u32 = 8;

fn buf(attn: &Attention, elems: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
    common::plain(attn, (elems * 4).max(4), usage)
}

struct Bufs {
    q: wgpu::Buffer,
    k: wgpu::Buffer,
    v: wgpu::Buffer,
    o: wgpu::Buffer,
    rows: wgpu::Buffer,
}

fn bufs(attn: &Attention) -> Bufs {
    let n = (T * H * D) as u64;
    let s = wgpu::BufferUsages::STORAGE;
    Bufs { q: buf(attn, n, s), k: buf(attn, n, s), v: buf(attn, n, s), o: buf(attn, n, s), rows: buf(attn, (H * T) as u64, s) }
}

fn call<'a>(b: &'a Bufs) -> Forward<'a> {
    let shape = Shape::new().with_batch(1).with_seq_len(T).with_heads(H).with_head_dim(D);
    let t = |x| TensorRef::bthd(x);
    Forward::new(shape, Dtype::F32, t(&b.q), t(&b.k), t(&b.v), t(&b.o))
}

/// Runs `f(call)` and returns the error, checking the encoder is still clean.
fn err(attn: &Attention, c: &Forward<'_>) -> Error {
    let mut enc = attn.device().create_command_encoder(&Default::default());
    let e = attn.forward(&mut enc, c).expect_err("expected an error");
    let scope = attn.device().push_error_scope(wgpu::ErrorFilter::Validation);
    attn.queue().submit([enc.finish()]);
    assert!(pollster::block_on(scope.pop()).is_none(), "encoder was left invalid");
    eprintln!("{e}");
    e
}

#[test]
fn valid_call_is_accepted() {
    let attn = gpu_or_skip!();
    let b = bufs(attn);
    let mut enc = attn.device().create_command_encoder(&Default::default());
    attn.forward(&mut enc, &call(&b)).unwrap();
    attn.queue().submit([enc.finish()]);
}

#[test]
fn zero_sizes() {
    let attn = gpu_or_skip!();
    let b = bufs(attn);
    for shape in [Shape::new().with_batch(0).with_seq_len(T).with_heads(H).with_head_dim(D), Shape::new().with_batch(1).with_seq_len(0).with_heads(H).with_head_dim(D), Shape::new().with_batch(1).with_seq_len(T).with_heads(0).with_head_dim(D), Shape::new().with_batch(1).with_seq_len(T).with_heads(H).with_head_dim(D).with_kv_heads(0)] {
        let c = tweak(call(&b), |c| c.shape = shape);
        assert!(matches!(err(attn, &c), Error::Shape(_)));
    }
}

#[test]
fn unsupported_head_dims() {
    let attn = gpu_or_skip!();
    let b = bufs(attn);
    for d in [0, 257, 1000] {
        let c = tweak(call(&b), |c| c.shape = Shape::new().with_batch(1).with_seq_len(T).with_heads(H).with_head_dim(d));
        assert!(matches!(err(attn, &c), Error::HeadDim { head_dim, max: 256 } if head_dim == d));
    }
}

#[test]
fn heads_not_divisible() {
    let attn = gpu_or_skip!();
    let b = bufs(attn);
    let c = tweak(call(&b), |c| c.shape = Shape::new().with_batch(1).with_seq_len(T).with_heads(3).with_head_dim(D).with_kv_heads(2));
    assert!(matches!(err(attn, &c), Error::HeadsNotDivisible { heads: 3, kv_heads: 2 }));
}

#[test]
fn non_finite_scale() {
    let attn = gpu_or_skip!();
    let b = bufs(attn);
    for s in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let c = tweak(call(&b), |c| c.scale = Some(s));
        assert!(matches!(err(attn, &c), Error::NonFiniteScale(_)));
    }
}

#[test]
fn buffer_too_small() {
    let attn = gpu_or_skip!();
    let b = bufs(attn);
    let small = buf(attn, (T * H * D - 1) as u64, wgpu::BufferUsages::STORAGE);
    let c = tweak(call(&b), |c| c.k = TensorRef::bthd(&small));
    assert!(matches!(err(attn, &c), Error::BufferTooSmall { tensor: "k", .. }));
}

#[test]
fn offset_past_the_end() {
    let attn = gpu_or_skip!();
    let b = bufs(attn);
    let c = call(&b);
    let c = tweak(c, |c| c.v = c.v.at_offset(1));
    assert!(matches!(err(attn, &c), Error::BufferTooSmall { tensor: "v", .. }));
}

#[test]
fn strides_past_the_end() {
    let attn = gpu_or_skip!();
    let b = bufs(attn);
    let c = call(&b);
    let c = tweak(c, |c| c.q = TensorRef::strided(&b.q, Strides { batch: 0, token: H as u64 * D as u64 + 1, head: D as u64 }));
    assert!(matches!(err(attn, &c), Error::BufferTooSmall { tensor: "q", .. }));
}

#[test]
fn missing_storage_usage() {
    let attn = gpu_or_skip!();
    let b = bufs(attn);
    let uniform = buf(attn, (T * H * D) as u64, wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST);
    let c = tweak(call(&b), |c| c.q = TensorRef::bthd(&uniform));
    assert!(matches!(err(attn, &c), Error::BufferUsage { tensor: "q", .. }));
}

#[test]
fn overlapping_output_strides() {
    let attn = gpu_or_skip!();
    let b = bufs(attn);
    // Heads 4 elements apart with D = 8: rows of o overlap.
    let c = tweak(call(&b), |c| c.o = TensorRef::strided(&b.o, Strides { batch: 0, token: (H * D) as u64, head: 4 }));
    assert!(matches!(err(attn, &c), Error::Stride { tensor: "o", .. }));
    // Token stride 0 with T > 1: every token writes the same row.
    let c = tweak(call(&b), |c| c.o = TensorRef::strided(&b.o, Strides { batch: 0, token: 0, head: D as u64 }));
    assert!(matches!(err(attn, &c), Error::Stride { tensor: "o", .. }));
}

#[test]
fn output_on_an_input_buffer() {
    let attn = gpu_or_skip!();
    let b = bufs(attn);
    let c = tweak(call(&b), |c| c.o = TensorRef::bthd(&b.q));
    assert!(matches!(err(attn, &c), Error::Aliasing { a: "q", b: "o" }));
}

#[test]
fn overlapping_outputs() {
    let attn = gpu_or_skip!();
    let b = bufs(attn);
    let c = call(&b).with_remainder(Remainder::Return(BufferRef::new(&b.rows))).with_log_rem(BufferRef::new(&b.rows));
    assert!(matches!(err(attn, &c), Error::Aliasing { a: "rem", b: "log_rem" }));
}

#[test]
fn row_output_too_small() {
    let attn = gpu_or_skip!();
    let b = bufs(attn);
    let small = buf(attn, (H * T - 1) as u64, wgpu::BufferUsages::STORAGE);
    let c = tweak(call(&b), |c| c.remainder = Remainder::Return(BufferRef::new(&small)));
    assert!(matches!(err(attn, &c), Error::BufferTooSmall { tensor: "rem", .. }));
    let c = tweak(call(&b), |c| c.log_rem = Some(BufferRef::new(&small)));
    assert!(matches!(err(attn, &c), Error::BufferTooSmall { tensor: "log_rem", .. }));
}

#[test]
fn bias_too_small() {
    let attn = gpu_or_skip!();
    let b = bufs(attn);
    let small = buf(attn, (H * D - 1) as u64, wgpu::BufferUsages::STORAGE);
    let c = tweak(call(&b), |c| c.remainder = Remainder::AddBias(BufferRef::new(&small)));
    assert!(matches!(err(attn, &c), Error::BufferTooSmall { tensor: "bias", .. }));
}

#[test]
fn dispatch_over_the_limit() {
    let attn = gpu_or_skip!();
    let limit = attn.capabilities().limits.max_compute_workgroups_per_dimension;
    let n = limit as u64 + 1; // T = D = 1
    let s = wgpu::BufferUsages::STORAGE;
    let (q, k, v, o) = (buf(attn, n, s), buf(attn, n, s), buf(attn, n, s), buf(attn, n, s));
    let t = |x| TensorRef::bthd(x);
    let shape = Shape::new().with_seq_len(1).with_head_dim(1);
    // Heads are dispatch y: one more than the limit is refused.
    let c = Forward::new(shape.with_heads(limit + 1), Dtype::F32, t(&q), t(&k), t(&v), t(&o));
    assert!(matches!(err(attn, &c), Error::Limit { .. }));
    // Work items (sequence, query tile) spread over dispatch x and z: a batch past the limit
    // of one dimension is accepted.
    let c = Forward::new(shape.with_batch(limit + 1).with_heads(1), Dtype::F32, t(&q), t(&k), t(&v), t(&o));
    let mut enc = attn.device().create_command_encoder(&Default::default());
    attn.forward(&mut enc, &c).expect("a batch past one dispatch dimension");
}

/// A device made without SHADER_F16 and SUBGROUP refuses f16 and the forced subgroup path.
#[test]
fn missing_features() {
    let Some(full) = common::attention() else { return };
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    let name = &full.capabilities().name;
    let adapter = adapters.into_iter().find(|a| &a.get_info().name == name).expect("same adapter");
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default())).unwrap();
    let attn = Attention::new(&device, &queue);
    let b = bufs(&attn);
    let c = tweak(call(&b), |c| c.dtype = Dtype::F16);
    assert!(matches!(err(&attn, &c), Error::Unsupported(_)));
    let c = tweak(call(&b), |c| c.path = KernelPath::Subgroup);
    assert!(matches!(err(&attn, &c), Error::Unsupported(_)));
    // The shared-memory path still runs there.
    let mut enc = device.create_command_encoder(&Default::default());
    attn.forward(&mut enc, &tweak(call(&b), |c| c.path = KernelPath::Auto)).unwrap();
    queue.submit([enc.finish()]);
}

/// Host-side helper: wrong slice lengths.
#[test]
fn host_data_lengths() {
    let attn = gpu_or_skip!();
    let shape = Shape::new().with_batch(1).with_seq_len(T).with_heads(H).with_head_dim(D);
    let n = (T * H * D) as usize;
    let x = vec![0.5f32; n];
    let short = vec![0.5f32; n - 1];
    let e = attn.run_host_blocking(&sbattn::HostInput::new(shape, &x, &short, &x)).unwrap_err();
    assert!(matches!(e, Error::HostData { what: "k", .. }));
}
