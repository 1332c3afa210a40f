//! The weights op (`Attention::weights`, `Attention::weights_host`) on the GPU against
//! `sbattn::reference::weights` (and the reference `rem`), over odd sequence lengths, head dims
//! 1 to 256, both masks, scales, GQA and MQA, f32 and f16 storage, both layouts and strided
//! (fused QKV) inputs, `A` and `rem` at offsets; then the size limit and the errors.
//!
//! Tolerance: `|gpu - w| <= 2e-5 * (1 + |w|)` per element (`A` and `rem` are f32 in both dtypes;
//! the reference sees the f16-rounded inputs), as tests/forward.rs argues for `rem`. Every
//! output buffer starts as NaN, so an element the kernel leaves unwritten fails.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{check_close, tweak, Rng};
use sbattn::{
    reference, round_to, weights_bytes, Attention, BufferRef, Dtype, Error, HostInput, HostRemainder, Layout, Mask, Shape,
    Strides, TensorRef, Weights, MAX_WEIGHTS_SEQ_LEN,
};

/// A buffer of `n` f32 NaNs (`STORAGE | COPY_SRC | COPY_DST`).
fn nans(attn: &Attention, n: u64) -> wgpu::Buffer {
    common::buffer(attn, &vec![f32::NAN; n as usize], Dtype::F32)
}

#[derive(Clone, Copy, Debug)]
struct Case {
    shape: Shape,
    layout: Layout,
    dtype: Dtype,
    mask: Mask,
    scale: Option<f32>,
}

/// Random q, k (and v, unused) for `s`, rounded to `dtype`.
fn inputs(s: &Shape, dtype: Dtype, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(seed);
    let nq = (s.batch() * s.seq_len() * s.heads() * s.head_dim()) as usize;
    let nkv = (s.batch() * s.seq_len() * s.kv_heads() * s.head_dim()) as usize;
    (round_to(&rng.normals(nq, 1.0), dtype), round_to(&rng.normals(nkv, 1.0), dtype), vec![0.0; nkv])
}

/// Compares every (batch, head) slice of `a` (`[B, H, T, T]`) and `rem` with the reference.
fn check_all(what: &str, input: &HostInput<'_>, a: &[f32], rem: &[f32]) {
    let s = input.shape;
    let t = s.seq_len() as usize;
    let want_rem = reference::forward(&input.with_remainder(HostRemainder::Return)).unwrap().rem;
    check_close(&format!("{what} rem"), rem, &want_rem, 0.0, 0.0);
    for b in 0..s.batch() {
        for h in 0..s.heads() {
            let want = reference::weights(input, b, h).unwrap();
            let at = ((b * s.heads() + h) as usize) * t * t;
            check_close(&format!("{what} A[b {b}, h {h}]"), &a[at..at + t * t], &want, 0.0, 0.0);
        }
    }
}

/// Runs `case` through `Attention::weights` on whole contiguous tensors (A and rem at offsets
/// in larger buffers) and checks everything.
fn run_case(attn: &Attention, case: Case, seed: u64) {
    let s = case.shape;
    let (q, k, v) = inputs(&s, case.dtype, seed);
    let input = HostInput::new(s, &q, &k, &v).with_layout(case.layout).with_dtype(case.dtype).with_mask(case.mask).with_scale(case.scale);
    let (qb, kb) = (common::buffer(attn, &q, case.dtype), common::buffer(attn, &k, case.dtype));
    let (a_elems, rows) = (weights_bytes(&s) / 4, s.rows());
    // Offsets that are not multiples of the binding alignment.
    let (a_off, rem_off) = (5u64, 3u64);
    let a = nans(attn, a_off + a_elems + 7);
    let rem = nans(attn, rem_off + rows);
    let call = Weights::new(s, case.dtype, TensorRef::contiguous(&qb, case.layout), TensorRef::contiguous(&kb, case.layout), BufferRef::new(&a).at_offset(a_off))
        .with_mask(case.mask)
        .with_scale(case.scale)
        .with_rem(BufferRef::new(&rem).at_offset(rem_off));
    let mut enc = attn.device().create_command_encoder(&Default::default());
    attn.weights(&mut enc, &call).unwrap();
    let got = common::read(attn, enc, &[(&a, (a_off + a_elems + 7) * 4, Dtype::F32), (&rem, (rem_off + rows) * 4, Dtype::F32)]);
    let (a_all, rem_all) = (&got[0], &got[1]);
    assert!(a_all[..a_off as usize].iter().all(|x| x.is_nan()) && a_all[(a_off + a_elems) as usize..].iter().all(|x| x.is_nan()), "{case:?}: A written outside its run");
    assert!(rem_all[..rem_off as usize].iter().all(|x| x.is_nan()), "{case:?}: rem written before its offset");
    check_all(&format!("{case:?}"), &input, &a_all[a_off as usize..(a_off + a_elems) as usize], &rem_all[rem_off as usize..]);
    eprintln!("{case:?}: ok");
}

const TS: [u32; 7] = [1, 2, 5, 33, 64, 130, 300];
const DS: [u32; 6] = [1, 3, 16, 64, 80, 256];

/// Every T with every D; the other factors rotate so that each value of each appears with many
/// of the others.
#[test]
fn grid() {
    let attn = gpu_or_skip!();
    for (ti, &t) in TS.iter().enumerate() {
        for (di, &d) in DS.iter().enumerate() {
            let n = ti * DS.len() + di;
            let (heads, kv_heads) = [(2, 2), (4, 2), (3, 1)][n % 3];
            let batch = if t >= 130 { 1 } else { 1 + (n / 3 % 2) as u32 };
            let case = Case {
                shape: Shape::new().with_batch(batch).with_seq_len(t).with_heads(heads).with_kv_heads(kv_heads).with_head_dim(d),
                layout: if (n / 2).is_multiple_of(2) { Layout::Bthd } else { Layout::Bhtd },
                dtype: if (ti + di).is_multiple_of(2) { Dtype::F32 } else { Dtype::F16 },
                mask: if (n / 5).is_multiple_of(2) { Mask::Strict } else { Mask::IncludeCurrent },
                scale: [None, Some(0.3), None, Some(-1.0)][n % 4],
            };
            if case.dtype == Dtype::F16 && !attn.capabilities().f16() {
                continue;
            }
            run_case(attn, case, 100 + n as u64);
        }
    }
}

/// Both masks and dtypes on one odd shape, and extreme scales (every stick spent at once, or
/// nearly nothing taken).
#[test]
fn options_and_scales() {
    let attn = gpu_or_skip!();
    let mut seed = 0;
    for dtype in [Dtype::F32, Dtype::F16] {
        if dtype == Dtype::F16 && !attn.capabilities().f16() {
            continue;
        }
        for mask in [Mask::Strict, Mask::IncludeCurrent] {
            for scale in [None, Some(0.0), Some(4.0), Some(-4.0)] {
                seed += 1;
                let shape = Shape::new().with_batch(2).with_seq_len(37).with_heads(6).with_kv_heads(2).with_head_dim(24);
                run_case(attn, Case { shape, layout: Layout::Bthd, dtype, mask, scale }, seed);
            }
        }
    }
}

/// q and k as slices of one fused `[B, T, 3, H, D]` QKV buffer (token stride 3 H D, k at offset
/// H D): strides and offsets as `Forward` takes them.
#[test]
fn fused_qkv_strides() {
    let attn = gpu_or_skip!();
    let (b, t, h, d) = (2u32, 45u32, 3u32, 20u32);
    let shape = Shape::new().with_batch(b).with_seq_len(t).with_heads(h).with_head_dim(d);
    let mut rng = Rng::new(7);
    let fused = rng.normals((b * t * 3 * h * d) as usize, 1.0);
    let strides = Strides { batch: (t * 3 * h * d) as u64, token: (3 * h * d) as u64, head: d as u64 };
    // The same q and k as contiguous [B, T, H, D] copies, for the reference.
    let pick = |part: u32| -> Vec<f32> {
        let mut out = Vec::new();
        for bi in 0..b {
            for ti in 0..t {
                for hi in 0..h {
                    let at = (strides.index(bi, ti, hi) + (part * h * d) as u64) as usize;
                    out.extend_from_slice(&fused[at..at + d as usize]);
                }
            }
        }
        out
    };
    let (q, k, v) = (pick(0), pick(1), pick(2));
    let input = HostInput::new(shape, &q, &k, &v).with_mask(Mask::IncludeCurrent);
    let buf = common::buffer(attn, &fused, Dtype::F32);
    let a = nans(attn, weights_bytes(&shape) / 4);
    let rem = nans(attn, shape.rows());
    let call = Weights::new(
        shape,
        Dtype::F32,
        TensorRef::strided(&buf, strides),
        TensorRef::strided(&buf, strides).at_offset((h * d) as u64),
        BufferRef::new(&a),
    )
    .with_mask(Mask::IncludeCurrent)
    .with_rem(BufferRef::new(&rem));
    let mut enc = attn.device().create_command_encoder(&Default::default());
    attn.weights(&mut enc, &call).unwrap();
    let got = common::read(attn, enc, &[(&a, weights_bytes(&shape), Dtype::F32), (&rem, shape.rows() * 4, Dtype::F32)]);
    check_all("fused qkv", &input, &got[0], &got[1]);
}

/// Without `rem`, only `A` is written (and it is the same).
#[test]
fn without_rem() {
    let attn = gpu_or_skip!();
    let shape = Shape::new().with_seq_len(70).with_heads(2).with_head_dim(8);
    let (q, k, v) = inputs(&shape, Dtype::F32, 3);
    let (qb, kb) = (common::buffer(attn, &q, Dtype::F32), common::buffer(attn, &k, Dtype::F32));
    let a = nans(attn, weights_bytes(&shape) / 4);
    let call = Weights::new(shape, Dtype::F32, TensorRef::bthd(&qb), TensorRef::bthd(&kb), BufferRef::new(&a));
    let mut enc = attn.device().create_command_encoder(&Default::default());
    attn.weights(&mut enc, &call).unwrap();
    let got = common::read(attn, enc, &[(&a, weights_bytes(&shape), Dtype::F32)]).remove(0);
    let input = HostInput::new(shape, &q, &k, &v);
    for h in 0..2 {
        let at = (h * 70 * 70) as usize;
        check_close("A", &got[at..at + 70 * 70], &reference::weights(&input, 0, h).unwrap(), 0.0, 0.0);
    }
}

/// The host helper, on one slice of a GQA problem in each layout and dtype.
#[test]
fn host_helper_slices() {
    let attn = gpu_or_skip!();
    let shape = Shape::new().with_batch(2).with_seq_len(50).with_heads(4).with_kv_heads(2).with_head_dim(33);
    for (i, (layout, dtype)) in [(Layout::Bthd, Dtype::F32), (Layout::Bhtd, Dtype::F16)].into_iter().enumerate() {
        if dtype == Dtype::F16 && !attn.capabilities().f16() {
            continue;
        }
        let (q, k, v) = inputs(&shape, dtype, 40 + i as u64);
        let input = HostInput::new(shape, &q, &k, &v).with_layout(layout).with_dtype(dtype).with_scale(Some(0.25));
        let want_rem = reference::forward(&input.with_remainder(HostRemainder::Return)).unwrap().rem;
        for (b, h) in [(0, 0), (1, 3), (1, 2)] {
            let got = attn.weights_host_blocking(&input, b, h).unwrap();
            assert_eq!((got.seq_len, got.a.len(), got.rem.len()), (50, 2500, 50));
            check_close(&format!("{layout:?} {dtype:?} ({b}, {h}) A"), &got.a, &reference::weights(&input, b, h).unwrap(), 0.0, 0.0);
            let r = ((b * 4 + h) * 50) as usize;
            check_close(&format!("{layout:?} {dtype:?} ({b}, {h}) rem"), &got.rem, &want_rem[r..r + 50], 0.0, 0.0);
            let row: f32 = got.row(30).iter().sum::<f32>() + got.rem[30];
            assert!((row - 1.0).abs() < 1e-5, "weights and rem of a row make up the stick: {row}");
        }
        assert!(matches!(attn.weights_host_blocking(&input, 2, 0), Err(Error::Shape(_))));
        assert!(matches!(attn.weights_host_blocking(&input, 0, 4), Err(Error::Shape(_))));
    }
}

/// The longest sequence the op takes, compared in full.
#[test]
fn at_the_length_limit() {
    let attn = gpu_or_skip!();
    let t = MAX_WEIGHTS_SEQ_LEN;
    let shape = Shape::new().with_seq_len(t).with_head_dim(2);
    let (q, k, v) = inputs(&shape, Dtype::F32, 11);
    let input = HostInput::new(shape, &q, &k, &v).with_mask(Mask::IncludeCurrent);
    let got = attn.weights_host_blocking(&input, 0, 0).unwrap();
    check_close("T 4096 A", &got.a, &reference::weights(&input, 0, 0).unwrap(), 0.0, 0.0);
}

#[test]
fn errors() {
    let attn = gpu_or_skip!();
    let s = wgpu::BufferUsages::STORAGE;
    let shape = Shape::new().with_seq_len(16).with_heads(2).with_head_dim(8);
    let q = common::plain(attn, 16 * 2 * 8 * 4, s);
    let k = common::plain(attn, 16 * 2 * 8 * 4, s);
    let a = common::plain(attn, weights_bytes(&shape), s);
    let rem = common::plain(attn, 2 * 16 * 4, s);
    let run = |call: &Weights<'_>| {
        let mut enc = attn.device().create_command_encoder(&Default::default());
        let r = attn.weights(&mut enc, call);
        attn.queue().submit([enc.finish()]);
        r
    };
    let ok = Weights::new(shape, Dtype::F32, TensorRef::bthd(&q), TensorRef::bthd(&k), BufferRef::new(&a)).with_rem(BufferRef::new(&rem));
    run(&ok).unwrap();

    let long = Shape::new().with_seq_len(MAX_WEIGHTS_SEQ_LEN + 1).with_head_dim(8);
    let e = run(&tweak(ok, |c| c.shape = long)).unwrap_err();
    assert!(matches!(e, Error::Limit { what: "weights sequence length", .. }), "{e}");
    let e = run(&tweak(ok, |c| c.a = BufferRef::new(&a).at_offset(1))).unwrap_err();
    assert!(matches!(e, Error::BufferTooSmall { tensor: "a", .. }), "{e}");
    let e = run(&tweak(ok, |c| c.rem = Some(BufferRef::new(&a)))).unwrap_err();
    assert!(matches!(e, Error::Aliasing { .. }), "{e}");
    let e = run(&tweak(ok, |c| c.a = BufferRef::new(&q))).unwrap_err();
    assert!(matches!(e, Error::Aliasing { .. } | Error::BufferTooSmall { .. }), "{e}");
    let e = run(&tweak(ok, |c| c.scale = Some(f32::NAN))).unwrap_err();
    assert!(matches!(e, Error::NonFiniteScale(_)), "{e}");
    let e = run(&tweak(ok, |c| c.shape = shape.with_kv_heads(3))).unwrap_err();
    assert!(matches!(e, Error::HeadsNotDivisible { .. }), "{e}");
    let e = run(&tweak(ok, |c| c.shape = shape.with_head_dim(257))).unwrap_err();
    assert!(matches!(e, Error::HeadDim { .. }), "{e}");
    let no_storage = common::plain(attn, weights_bytes(&shape), wgpu::BufferUsages::COPY_DST);
    let e = run(&tweak(ok, |c| c.a = BufferRef::new(&no_storage))).unwrap_err();
    assert!(matches!(e, Error::BufferUsage { tensor: "a", .. }), "{e}");

    // A over the largest storage binding, where such a buffer can be made cheaply.
    let limits = &attn.capabilities().limits;
    let slice = weights_bytes(&Shape::new().with_seq_len(MAX_WEIGHTS_SEQ_LEN));
    let heads = (limits.max_storage_buffer_binding_size / slice + 1) as u32;
    if heads as u64 * slice <= limits.max_buffer_size.min(1 << 30) {
        let big = Shape::new().with_seq_len(MAX_WEIGHTS_SEQ_LEN).with_heads(heads).with_head_dim(1);
        let (qb, kb) = (common::plain(attn, (heads * MAX_WEIGHTS_SEQ_LEN * 4) as u64, s), common::plain(attn, (heads * MAX_WEIGHTS_SEQ_LEN * 4) as u64, s));
        let huge = common::plain(attn, weights_bytes(&big), s);
        let call = Weights::new(big, Dtype::F32, TensorRef::bthd(&qb), TensorRef::bthd(&kb), BufferRef::new(&huge));
        let e = run(&call).unwrap_err();
        assert!(matches!(e, Error::Limit { what: "storage binding size", .. }), "{e}");
    }
}
