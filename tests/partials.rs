#![cfg(not(target_arch = "wasm32"))]
//! Partial results and their merge (lavapipe in CI): a sequence held in several caches — on one
//! device, and on two devices with the partial results carried from one to the other through
//! the host — gives the rows of one decode over the whole sequence, and the reference's.
//!
//! Tolerances as tests/decode.rs: against the f64 reference `2e-5` absolute (f32 storage) and
//! `3e-3` (f16: the output's final rounding); against one decode call over a single cache (only
//! the order of f32 sums differs, plus one f16 rounding of `o` with f16 storage) `1e-5`, and
//! one f16 ulp of `o` for f16.

mod common;

use common::{buffer, compare, gather, read, zeros, Rng};
use sbattn::{
    reference, round_to, Append, Attention, BufferRef, Decode, Dtype, Error, HostInput, HostRemainder, KvCache, KvCacheDesc,
    Layout, Mask, Merge, Partials, Remainder, Shape, TensorRef,
};

#[derive(Clone, Copy, Debug)]
struct Case {
    heads: u32,
    kv_heads: u32,
    d: u32,
    dtype: Dtype,
    mask: Mask,
    rem: u8, // 0 discard, 1 return, 2 add value, 3 add bias
    n: u32,  // queries per sequence (its last tokens)
}

/// Whole sequences (token-major, rounded to the dtype) and what the reference says of their
/// last `n` rows.
struct Data {
    q: Vec<Vec<f32>>,
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    bias: Vec<f32>,
    /// `[B, n, H, D]`, `[B, H, n]`, `[B, H, n]`.
    o: Vec<f64>,
    rem: Vec<f64>,
    log_rem: Vec<f64>,
}

impl Data {
    fn new(c: &Case, lens: &[u32], seed: u64) -> Data {
        let mut rng = Rng::new(seed);
        let (hd, kd) = ((c.heads * c.d) as usize, (c.kv_heads * c.d) as usize);
        let mut draw = |n: usize| round_to(&rng.normals(n, 1.0), c.dtype);
        let q: Vec<_> = lens.iter().map(|&l| draw(l as usize * hd)).collect();
        let k: Vec<_> = lens.iter().map(|&l| draw(l as usize * kd)).collect();
        let v: Vec<_> = lens.iter().map(|&l| draw(l as usize * kd)).collect();
        let bias = draw(hd);
        let (mut o, mut rem, mut log_rem) = (Vec::new(), vec![0.0; 0], Vec::new());
        let h = c.heads as usize;
        let mut rows = vec![Vec::new(); lens.len()];
        for (b, &len) in lens.iter().enumerate() {
            let shape = Shape::new().with_seq_len(len).with_heads(c.heads).with_kv_heads(c.kv_heads).with_head_dim(c.d);
            let r = [HostRemainder::Discard, HostRemainder::Return, HostRemainder::AddToValue, HostRemainder::AddBias(&bias)][c.rem as usize];
            let input = HostInput::new(shape, &q[b], &k[b], &v[b]).with_layout(Layout::Bthd).with_dtype(c.dtype).with_mask(c.mask).with_remainder(r);
            let want = reference::forward(&input).unwrap();
            let (len, n) = (len as usize, c.n as usize);
            o.extend_from_slice(&want.o[(len - n) * hd..len * hd]);
            for hh in 0..h {
                rows[b].push((hh * len + len - n, n));
            }
            for &(at, n) in &rows[b] {
                rem.extend_from_slice(&want.rem[at..at + n]);
                log_rem.extend_from_slice(&want.log_rem[at..at + n]);
            }
        }
        Data { q, k, v, bias, o, rem, log_rem }
    }
}

/// The outputs of one case: o, rem (zeros unless returned), log rem.
type Out = Vec<Vec<f32>>;

/// Runs case `c` over sequences of `lens` tokens whose keys are spread over caches: cache 0
/// the oldest tokens, each further cache the next `tail[i]` tokens of every sequence. With one
/// cache (`tail` empty) it is a plain decode; with more, partial results in one buffer merged
/// at the end. `devices` says on which context each cache lives: the partial results computed
/// on another context than the last are read back and uploaded to it.
fn run(devices: &[&Attention], c: &Case, lens: &[u32], tail: &[u32], data: &Data) -> Out {
    let batch = lens.len();
    let (hd, kd) = ((c.heads * c.d) as usize, (c.kv_heads * c.d) as usize);
    let later_of = |i: usize| tail[i..].iter().sum::<u32>(); // tokens after cache i's
    let parts = tail.len() as u32 + 1;
    let rows = (batch as u32 * c.heads * c.n) as u64;
    let (po_bytes, ps_bytes) = Partials::bytes(rows, c.d, parts);
    // The partial buffers: on the context that wrote them last, or on the host between two.
    let mut on_device: Option<(&Attention, wgpu::Buffer, wgpu::Buffer)> = None;
    for part in 0..parts as usize {
        let attn = devices[part.min(devices.len() - 1)];
        // Cache `part`: tokens [from_b, from_b + count_b) of each sequence.
        let later = later_of(part);
        let spans: Vec<(u32, u32)> = lens.iter().map(|&l| {
            let from = if part == 0 { 0 } else { l - later_of(part - 1) };
            (from, l - later - from)
        }).collect();
        let most = spans.iter().map(|s| s.1).max().unwrap();
        let desc = KvCacheDesc::new(batch as u32, c.kv_heads, c.d, most.max(1), c.dtype);
        let mut cache = KvCache::new(attn, desc).unwrap();
        let mut enc = attn.device().create_command_encoder(&Default::default());
        if most > 0 {
            let padded: Vec<(u32, u32)> = spans.iter().map(|s| (s.0, most)).collect();
            let (k, v) = (buffer(attn, &gather(&data.k, &padded, kd), c.dtype), buffer(attn, &gather(&data.v, &padded, kd), c.dtype));
            let counts: Vec<u32> = spans.iter().map(|s| s.1).collect();
            attn.append(&mut enc, &mut cache, &Append::new(TensorRef::bthd(&k), TensorRef::bthd(&v), most).with_counts(&counts)).unwrap();
        }
        let q_spans: Vec<(u32, u32)> = lens.iter().map(|&l| (l - c.n, c.n)).collect();
        let q = buffer(attn, &gather(&data.q, &q_spans, hd), c.dtype);
        let o = zeros(attn, rows * c.d as u64 * c.dtype.size());
        let (rem, log_rem) = (zeros(attn, 4 * rows), zeros(attn, 4 * rows));
        let bias = buffer(attn, &data.bias, c.dtype);
        let values = buffer(attn, &gather(&data.v, &q_spans, kd), c.dtype);
        let remainder = [Remainder::Discard, Remainder::Return(BufferRef::new(&rem)), Remainder::AddToValue, Remainder::AddBias(BufferRef::new(&bias))]
            [c.rem as usize];
        let decode = Decode::new(&cache, c.heads, c.n, TensorRef::bthd(&q), TensorRef::bthd(&o)).with_mask(c.mask);
        if parts == 1 {
            attn.decode(&mut enc, &decode.with_remainder(remainder).with_log_rem(BufferRef::new(&log_rem))).unwrap();
            return read(attn, enc, &[(&o, rows * c.d as u64 * c.dtype.size(), c.dtype), (&rem, 4 * rows, Dtype::F32), (&log_rem, 4 * rows, Dtype::F32)]);
        }
        let (po, ps) = match on_device.take() {
            Some((a, po, ps)) if std::ptr::eq(a, attn) => (po, ps),
            Some((a, po, ps)) => {
                let enc = a.device().create_command_encoder(&Default::default());
                let got = read(a, enc, &[(&po, po_bytes, Dtype::F32), (&ps, ps_bytes, Dtype::F32)]);
                (buffer(attn, &got[0], Dtype::F32), buffer(attn, &got[1], Dtype::F32))
            }
            None => (zeros(attn, po_bytes), zeros(attn, ps_bytes)),
        };
        let out = Partials::new(BufferRef::new(&po), BufferRef::new(&ps), parts);
        attn.decode_partial(&mut enc, &decode, later, &out, part as u32).unwrap();
        if part + 1 < parts as usize {
            attn.queue().submit([enc.finish()]);
            on_device = Some((attn, po, ps));
            continue;
        }
        let shape = Shape::new().with_batch(batch as u32).with_seq_len(c.n).with_heads(c.heads).with_kv_heads(c.kv_heads).with_head_dim(c.d);
        let mut merge = Merge::new(shape, c.dtype, out, TensorRef::bthd(&o)).with_remainder(remainder).with_log_rem(BufferRef::new(&log_rem));
        if c.rem == 2 {
            merge = merge.with_values(TensorRef::bthd(&values));
        }
        attn.merge(&mut enc, &merge).unwrap();
        return read(attn, enc, &[(&o, rows * c.d as u64 * c.dtype.size(), c.dtype), (&rem, 4 * rows, Dtype::F32), (&log_rem, 4 * rows, Dtype::F32)]);
    }
    unreachable!()
}

/// Checks `got` against the reference and against `whole` (one decode over one cache).
fn check(c: &Case, data: &Data, got: &Out, whole: &Out, what: &str) {
    let tol = if c.dtype == Dtype::F16 { 3e-3 } else { 2e-5 };
    let e = compare(&format!("{what} {c:?} o"), &got[0], &data.o);
    assert!(e.max_abs <= tol, "{what} {c:?}: o max error {:e} > {tol:e}", e.max_abs);
    let e = compare(&format!("{what} {c:?} log_rem"), &got[2], &data.log_rem);
    assert!(e.max_abs <= 2e-5 * (1.0 + e.ref_max), "{what} {c:?}: log rem max error {:e}", e.max_abs);
    if c.rem == 1 {
        let e = compare(&format!("{what} {c:?} rem"), &got[1], &data.rem);
        assert!(e.max_abs <= 2e-5, "{what} {c:?}: rem max error {:e}", e.max_abs);
    }
    let ulp = |x: f32| if c.dtype == Dtype::F16 { 2f32.powi(-10) * x.abs().max(2f32.powi(-14)) } else { 0.0 };
    for (j, (a, b)) in got[0].iter().zip(&whole[0]).enumerate() {
        assert!((a - b).abs() <= 1e-5 + ulp(*b), "{what} {c:?}: o[{j}] {a} vs one decode {b}");
    }
    for (j, (a, b)) in got[2].iter().zip(&whole[2]).enumerate() {
        assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{what} {c:?}: log_rem[{j}] {a} vs one decode {b}");
    }
    eprintln!("{what} {c:?}: ok");
}

/// Two and three caches on one device, every remainder mode, both masks, GQA, f32 and f16,
/// sequences of different lengths; and a part holding some of the queries' own tokens.
#[test]
fn parts_on_one_device() {
    let attn = gpu_or_skip!();
    let lens = [300, 77, 130];
    for (i, dtype) in [Dtype::F32, Dtype::F16].into_iter().enumerate() {
        for rem in 0..4u8 {
            let c = Case { heads: 4, kv_heads: 2, d: 64, dtype, mask: [Mask::Strict, Mask::IncludeCurrent][(rem as usize + i) % 2], rem, n: 3 };
            let data = Data::new(&c, &lens, 10 + (i * 4) as u64 + rem as u64);
            let whole = run(&[attn], &c, &lens, &[], &data);
            check(&c, &data, &whole, &whole, "one cache");
            check(&c, &data, &run(&[attn], &c, &lens, &[40], &data), &whole, "two caches");
            check(&c, &data, &run(&[attn], &c, &lens, &[20, 33], &data), &whole, "three caches");
            // The newest cache holds just the queries' tokens.
            check(&c, &data, &run(&[attn], &c, &lens, &[3], &data), &whole, "queries' tokens alone");
        }
    }
}

/// Two devices hold the older and the newer half of the same sequences; the older half's
/// partial results travel through the host to the device that merges.
#[test]
fn two_devices_hold_halves_of_one_cache() {
    let first = gpu_or_skip!();
    let second = Attention::with_default_adapter_blocking().expect("a second device");
    let lens = [500, 260];
    for (i, (dtype, rem)) in [(Dtype::F32, 1u8), (Dtype::F16, 2), (Dtype::F32, 3)].into_iter().enumerate() {
        let c = Case { heads: 8, kv_heads: 2, d: 80, dtype, mask: Mask::Strict, rem, n: 1 };
        let data = Data::new(&c, &lens, 40 + i as u64);
        let whole = run(&[first], &c, &lens, &[], &data);
        let split = run(&[first, &second], &c, &lens, &[250], &data);
        check(&c, &data, &split, &whole, "two devices");
    }
}

/// Every misuse is a typed error.
#[test]
fn bad_partial_calls_are_errors() {
    let attn = gpu_or_skip!();
    let mut cache = KvCache::new(attn, KvCacheDesc::new(1, 1, 16, 8, Dtype::F32)).unwrap();
    let mut enc = attn.device().create_command_encoder(&Default::default());
    cache.set_lengths(attn, &mut enc, &[2]).unwrap();
    attn.queue().submit([enc.finish()]);
    let (q, o, po, ps, rem) = (zeros(attn, 4096), zeros(attn, 4096), zeros(attn, 4096), zeros(attn, 4096), zeros(attn, 4096));
    let parts = Partials::new(BufferRef::new(&po), BufferRef::new(&ps), 2);
    let decode = Decode::new(&cache, 2, 3, TensorRef::bthd(&q), TensorRef::bthd(&o));
    let mut enc = attn.device().create_command_encoder(&Default::default());
    let param = |r: Result<(), Error>, what: &str| match r {
        Err(Error::InvalidParameter { name, reason }) => eprintln!("{what}: {name}: {reason}"),
        other => panic!("{what}: expected an invalid parameter, got {other:?}"),
    };
    param(attn.decode_partial(&mut enc, &decode.with_remainder(Remainder::Return(BufferRef::new(&rem))), 1, &parts, 0), "remainder on a part");
    param(attn.decode_partial(&mut enc, &decode.with_log_rem(BufferRef::new(&rem)), 1, &parts, 0), "log rem on a part");
    param(attn.decode_partial(&mut enc, &decode, 1, &parts, 2), "slot past the parts");
    param(attn.decode_partial(&mut enc, &decode, u32::MAX, &parts, 0), "later overflows");
    param(attn.decode_partial(&mut enc, &decode, 1, &Partials::new(BufferRef::new(&po).at_offset(2), BufferRef::new(&ps), 2), 0), "misaligned");
    assert!(matches!(attn.decode_partial(&mut enc, &decode, 0, &parts, 0), Err(Error::Shape(_))), "2 tokens, 3 queries, none later");
    attn.decode_partial(&mut enc, &decode, 1, &parts, 0).expect("2 tokens here, 1 later: 3 queries");
    let shape = Shape::new().with_seq_len(3).with_heads(2).with_head_dim(16);
    let merge = Merge::new(shape, Dtype::F32, parts, TensorRef::bthd(&o));
    param(attn.merge(&mut enc, &merge.with_remainder(Remainder::AddToValue)), "AddToValue without values");
    param(attn.merge(&mut enc, &merge.with_values(TensorRef::bthd(&q))), "values without AddToValue");
    param(attn.merge(&mut enc, &Merge::new(shape, Dtype::F32, Partials::new(BufferRef::new(&po).at_offset(4), BufferRef::new(&ps), 2), TensorRef::bthd(&o))), "merge from an offset");
    assert!(attn.merge(&mut enc, &Merge::new(shape, Dtype::F32, parts, TensorRef::bthd(&po))).is_err(), "output aliasing the partials");
    attn.merge(&mut enc, &merge).expect("a valid merge");
}

