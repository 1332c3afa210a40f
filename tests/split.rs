#![cfg(not(target_arch = "wasm32"))]
//! Calls larger than one binding (lavapipe in CI): on a device whose storage bindings are
//! limited to 256 KiB, forward calls whose tensors are several times that run as several
//! dispatches (over sequences, heads, then queries) and give bitwise the result of one call on
//! a device without the limit (the same kernel computes each row the same way, whatever the
//! piece it is in); what cannot be split stays a typed limit error.

mod common;

use common::{buffer, read, zeros, Rng};
use sbattn::{
    round_to, Attention, BufferRef, DeviceOptions, Dtype, Error, Forward, KernelPath, Keys, Layout, Mask, Remainder, Shape,
    TensorRef,
};

const LIMIT: u64 = 256 * 1024;

/// A second context on the default adapter, its device limited to [`LIMIT`]-byte bindings.
fn limited() -> Option<Attention> {
    common::attention()?;
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default())).expect("adapter");
    let mut desc = Attention::device_descriptor(&adapter, &DeviceOptions::default());
    desc.required_limits.max_storage_buffer_binding_size = LIMIT;
    let (device, queue) = pollster::block_on(adapter.request_device(&desc)).expect("device with a small binding limit");
    Some(Attention::from_adapter(&adapter, &device, &queue))
}

#[derive(Clone, Copy, Debug)]
struct Case {
    shape: Shape,
    layout: Layout,
    dtype: Dtype,
    mask: Mask,
    rem: u8, // 0 discard, 1 return, 2 add value, 3 add bias
    context: u32,
    path: KernelPath,
}

/// Runs `case` on `attn`: o, rem (or zeros) and log rem.
fn run(attn: &Attention, c: &Case, seed: u64) -> Result<Vec<Vec<f32>>, Error> {
    let s = c.shape;
    let mut rng = Rng::new(seed);
    let keys = s.seq_len() + c.context;
    let nq = (s.batch() * s.seq_len() * s.heads() * s.head_dim()) as usize;
    let nk = (s.batch() * keys * s.kv_heads() * s.head_dim()) as usize;
    let mut data = |n| buffer(attn, &round_to(&rng.normals(n, 1.0), c.dtype), c.dtype);
    let (q, k, v, bias) = (data(nq), data(nk), data(nk), data((s.heads() * s.head_dim()) as usize));
    let o = zeros(attn, nq as u64 * c.dtype.size());
    let rows = s.rows();
    let (rem, log_rem) = (zeros(attn, 4 * rows), zeros(attn, 4 * rows));
    let t = |b| TensorRef::contiguous(b, c.layout);
    let remainder = match c.rem {
        0 => Remainder::Discard,
        1 => Remainder::Return(BufferRef::new(&rem)),
        2 => Remainder::AddToValue,
        _ => Remainder::AddBias(BufferRef::new(&bias)),
    };
    let mut call = Forward::new(s, c.dtype, t(&q), t(&k), t(&v), t(&o))
        .with_mask(c.mask)
        .with_remainder(remainder)
        .with_log_rem(BufferRef::new(&log_rem))
        .with_path(c.path);
    if c.context > 0 {
        call = call.with_keys(Keys::Prefix(c.context));
    }
    let mut enc = attn.device().create_command_encoder(&Default::default());
    attn.forward(&mut enc, &call)?;
    Ok(read(attn, enc, &[(&o, nq as u64 * c.dtype.size(), c.dtype), (&rem, 4 * rows, Dtype::F32), (&log_rem, 4 * rows, Dtype::F32)]))
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn split_calls_equal_one_call() {
    let Some(small) = limited() else { return };
    let big = common::attention().unwrap();
    let shape = |b, t, h, hk, d| Shape::new().with_batch(b).with_seq_len(t).with_heads(h).with_kv_heads(hk).with_head_dim(d);
    let cases = [
        // [B, H, T, D]: over sequences, then groups of heads.
        (shape(3, 300, 4, 2, 64), Layout::Bhtd, Dtype::F32, Mask::Strict, 1, 0),
        // [B, T, H, D], one key/value head: sequences, heads, then queries (each head's token
        // span is the whole sequence's).
        (shape(2, 700, 4, 1, 32), Layout::Bthd, Dtype::F32, Mask::IncludeCurrent, 3, 0),
        // f16, the remainder added to the value, an earlier context.
        (shape(2, 1500, 2, 1, 64), Layout::Bthd, Dtype::F16, Mask::Strict, 2, 100),
    ];
    for (i, (shape, layout, dtype, mask, rem, context)) in cases.into_iter().enumerate() {
        let bytes = shape.batch() as u64 * shape.seq_len() as u64 * shape.heads() as u64 * shape.head_dim() as u64 * dtype.size();
        assert!(bytes > 2 * LIMIT, "case {i} must not fit one binding ({bytes} bytes)");
        for path in common::paths(big, dtype, shape.head_dim()).into_iter().filter(|p| !p.is_cooperative()) {
            let c = Case { shape, layout, dtype, mask, rem, context, path };
            let want = run(big, &c, 70 + i as u64).expect("one call");
            let got = run(&small, &c, 70 + i as u64).expect("split call");
            for (j, name) in ["o", "rem", "log_rem"].iter().enumerate() {
                assert!(got[j].iter().all(|x| x.is_finite()), "{c:?}: {name} not finite");
                assert_eq!(bits(&got[j]), bits(&want[j]), "{c:?}: {name} differs from one call");
            }
            eprintln!("{c:?}: split equals one call");
        }
    }
}

/// One sequence's keys of one head larger than a binding: a limit error, nothing recorded.
#[test]
fn unsplittable_is_a_limit_error() {
    let Some(small) = limited() else { return };
    let shape = Shape::new().with_seq_len(1100).with_heads(4).with_head_dim(64);
    let c = Case { shape, layout: Layout::Bthd, dtype: Dtype::F32, mask: Mask::Strict, rem: 0, context: 0, path: KernelPath::Auto };
    match run(&small, &c, 1) {
        Err(Error::Limit { what, value, limit }) => eprintln!("{what}: {value} > {limit}"),
        other => panic!("expected a limit error, got {:?}", other.map(|_| ())),
    }
}
