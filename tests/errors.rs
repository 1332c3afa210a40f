//! Every bad input gets its own clear `Error`, before anything is encoded (the encoder stays
//! usable and submits cleanly afterwards).
#![cfg(not(target_arch = "wasm32"))]

mod common;

use sbattn::{Attention, BufferRef, Dtype, Error, Forward, Path, Remainder, Shape, Strides, TensorRef};

const T: u32 = 10;
const H: u32 = 2;
const D: u32 = 8;

fn buf(attn: &Attention, elems: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
    attn.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: (elems * 4).next_multiple_of(4).max(4),
        usage,
        mapped_at_creation: false,
    })
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
    let shape = Shape::new(1, T, H, D);
    let t = |x| TensorRef::bthd(x, T, H, D);
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
    for shape in [Shape::new(0, T, H, D), Shape::new(1, 0, H, D), Shape::new(1, T, 0, D), Shape::new(1, T, H, D).with_kv_heads(0)] {
        let c = Forward { shape, ..call(&b) };
        assert!(matches!(err(attn, &c), Error::Shape(_)));
    }
}

#[test]
fn unsupported_head_dims() {
    let attn = gpu_or_skip!();
    let b = bufs(attn);
    for d in [0, 257, 1000] {
        let c = Forward { shape: Shape::new(1, T, H, d), ..call(&b) };
        assert!(matches!(err(attn, &c), Error::HeadDim { head_dim, max: 256 } if head_dim == d));
    }
}

#[test]
fn heads_not_divisible() {
    let attn = gpu_or_skip!();
    let b = bufs(attn);
    let c = Forward { shape: Shape::new(1, T, 3, D).with_kv_heads(2), ..call(&b) };
    assert!(matches!(err(attn, &c), Error::HeadsNotDivisible { heads: 3, kv_heads: 2 }));
}

#[test]
fn non_finite_scale() {
    let attn = gpu_or_skip!();
    let b = bufs(attn);
    for s in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let c = Forward { scale: Some(s), ..call(&b) };
        assert!(matches!(err(attn, &c), Error::NonFiniteScale(_)));
    }
}

#[test]
fn buffer_too_small() {
    let attn = gpu_or_skip!();
    let b = bufs(attn);
    let small = buf(attn, (T * H * D - 1) as u64, wgpu::BufferUsages::STORAGE);
    let c = Forward { k: TensorRef::bthd(&small, T, H, D), ..call(&b) };
    assert!(matches!(err(attn, &c), Error::BufferTooSmall { tensor: "k", .. }));
}

#[test]
fn offset_past_the_end() {
    let attn = gpu_or_skip!();
    let b = bufs(attn);
    let c = call(&b);
    let c = Forward { v: c.v.at_offset(1), ..c };
    assert!(matches!(err(attn, &c), Error::BufferTooSmall { tensor: "v", .. }));
}

#[test]
fn strides_past_the_end() {
    let attn = gpu_or_skip!();
    let b = bufs(attn);
    let c = call(&b);
    let c = Forward { q: TensorRef::new(&b.q, 0, Strides { batch: 0, token: H as u64 * D as u64 + 1, head: D as u64 }), ..c };
    assert!(matches!(err(attn, &c), Error::BufferTooSmall { tensor: "q", .. }));
}

#[test]
fn missing_storage_usage() {
    let attn = gpu_or_skip!();
    let b = bufs(attn);
    let uniform = buf(attn, (T * H * D) as u64, wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST);
    let c = Forward { q: TensorRef::bthd(&uniform, T, H, D), ..call(&b) };
    assert!(matches!(err(attn, &c), Error::BufferUsage { tensor: "q", .. }));
}

#[test]
fn overlapping_output_strides() {
    let attn = gpu_or_skip!();
    let b = bufs(attn);
    // Heads 4 elements apart with D = 8: rows of o overlap.
    let c = Forward { o: TensorRef::new(&b.o, 0, Strides { batch: 0, token: (H * D) as u64, head: 4 }), ..call(&b) };
    assert!(matches!(err(attn, &c), Error::Stride { tensor: "o", .. }));
    // Token stride 0 with T > 1: every token writes the same row.
    let c = Forward { o: TensorRef::new(&b.o, 0, Strides { batch: 0, token: 0, head: D as u64 }), ..call(&b) };
    assert!(matches!(err(attn, &c), Error::Stride { tensor: "o", .. }));
}

#[test]
fn output_on_an_input_buffer() {
    let attn = gpu_or_skip!();
    let b = bufs(attn);
    let c = Forward { o: TensorRef::bthd(&b.q, T, H, D), ..call(&b) };
    assert!(matches!(err(attn, &c), Error::Aliasing { a: "q", b: "o" }));
}

#[test]
fn overlapping_outputs() {
    let attn = gpu_or_skip!();
    let b = bufs(attn);
    let c = Forward {
        remainder: Remainder::Return(BufferRef::new(&b.rows)),
        log_rem: Some(BufferRef::new(&b.rows)),
        ..call(&b)
    };
    assert!(matches!(err(attn, &c), Error::Aliasing { a: "rem", b: "log_rem" }));
}

#[test]
fn row_output_too_small() {
    let attn = gpu_or_skip!();
    let b = bufs(attn);
    let small = buf(attn, (H * T - 1) as u64, wgpu::BufferUsages::STORAGE);
    let c = Forward { remainder: Remainder::Return(BufferRef::new(&small)), ..call(&b) };
    assert!(matches!(err(attn, &c), Error::BufferTooSmall { tensor: "rem", .. }));
    let c = Forward { log_rem: Some(BufferRef::new(&small)), ..call(&b) };
    assert!(matches!(err(attn, &c), Error::BufferTooSmall { tensor: "log_rem", .. }));
}

#[test]
fn bias_too_small() {
    let attn = gpu_or_skip!();
    let b = bufs(attn);
    let small = buf(attn, (H * D - 1) as u64, wgpu::BufferUsages::STORAGE);
    let c = Forward { remainder: Remainder::AddBias(BufferRef::new(&small)), ..call(&b) };
    assert!(matches!(err(attn, &c), Error::BufferTooSmall { tensor: "bias", .. }));
}

#[test]
fn dispatch_over_the_limit() {
    let attn = gpu_or_skip!();
    let limit = attn.capabilities().limits.max_compute_workgroups_per_dimension;
    let batch = limit + 1;
    let n = batch as u64; // T = H = D = 1
    let s = wgpu::BufferUsages::STORAGE;
    let (q, k, v, o) = (buf(attn, n, s), buf(attn, n, s), buf(attn, n, s), buf(attn, n, s));
    let t = |x| TensorRef::bthd(x, 1, 1, 1);
    let c = Forward::new(Shape::new(batch, 1, 1, 1), Dtype::F32, t(&q), t(&k), t(&v), t(&o));
    assert!(matches!(err(attn, &c), Error::Limit { .. }));
}

/// A device made without SHADER_F16 and SUBGROUP refuses f16 and the forced subgroup path.
#[test]
fn missing_features() {
    let Some(full) = common::attention() else { return };
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    let name = &full.capabilities().adapter.name;
    let adapter = adapters.into_iter().find(|a| &a.get_info().name == name).expect("same adapter");
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default())).unwrap();
    let attn = Attention::new(&device, &queue);
    let b = bufs(&attn);
    let c = Forward { dtype: Dtype::F16, ..call(&b) };
    assert!(matches!(err(&attn, &c), Error::Unsupported(_)));
    let c = Forward { path: Path::Subgroup, ..call(&b) };
    assert!(matches!(err(&attn, &c), Error::Unsupported(_)));
    // The shared-memory path still runs there.
    let mut enc = device.create_command_encoder(&Default::default());
    attn.forward(&mut enc, &Forward { path: Path::Auto, ..call(&b) }).unwrap();
    queue.submit([enc.finish()]);
}

/// Host-side helper: wrong slice lengths.
#[test]
fn host_data_lengths() {
    let attn = gpu_or_skip!();
    let shape = Shape::new(1, T, H, D);
    let n = (T * H * D) as usize;
    let x = vec![0.5f32; n];
    let short = vec![0.5f32; n - 1];
    let e = attn.run_host_blocking(&sbattn::HostInput::new(shape, &x, &short, &x)).unwrap_err();
    assert!(matches!(e, Error::HostData { what: "k", .. }));
}
