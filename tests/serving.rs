#![cfg(not(target_arch = "wasm32"))]
//! Serving calls of the forward kernels (lavapipe in CI): prefill against a KV cache in chunks
//! of any size, packed variable-length batches (`cu_seqlens`), keys with an earlier context
//! (`Keys::Prefix`, `Keys::Lengths`), and a typed error for every bad description.
//!
//! Every call's rows are checked against the f64 reference of each whole sequence (a causal
//! row depends only on the keys up to its own token, so the rows of a chunk are the matching
//! rows of one full forward pass), with the tolerances of tests/forward.rs:
//! - f32: `|gpu - w| <= 2e-5 (1 + |w|)`;
//! - f16: `+ 2^-11 |w|` (the final rounding of `o`; the reference sees the f16-rounded inputs);
//! - the tensor-core path (emulated here) also rounds each weight to f16 before `P V`:
//!   `+ (2^-11 + T 2^-25) max |v|`;
//! - `rem` and `log rem` (f32 in both dtypes): `2e-5 (1 + |w|)`.
//!
//! Padding of the key tensors past a sequence's keys is filled with `common::PAD`, so a kernel that
//! reads a key it must not see gives a visibly wrong answer.

mod common;

use common::{buffer, check_close, gather, read, zeros, Rem, Rng, REMS};
use sbattn::{
    reference, round_to, Append, Attention, Backward, BufferRef, Dtype, Error, Forward, HostInput,
    KernelPath, Keys, KvCache, KvCacheDesc, Layout, Mask, Remainder, Shape, TensorRef,
};

#[derive(Clone, Copy, Debug)]
struct Case {
    heads: u32,
    kv_heads: u32,
    d: u32,
    dtype: Dtype,
    mask: Mask,
    rem: Rem,
    path: KernelPath,
    /// The path whose tolerance applies: `path`, or what `Auto` resolves to on this adapter
    /// (the tensor-core kernel's bound is wider: tests/forward.rs).
    tol_path: KernelPath,
}

/// Whole sequences, token-major (`[len, heads, D]` each), rounded to the dtype, and their
/// reference outputs.
struct Data {
    q: Vec<Vec<f32>>,
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    bias: Vec<f32>,
    /// `None` for an empty sequence.
    want: Vec<Option<reference::Output>>,
    max_v: f64,
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
        let want = (0..lens.len())
            .map(|b| {
                let shape = Shape::new().with_seq_len(lens[b]).with_heads(c.heads).with_kv_heads(c.kv_heads).with_head_dim(c.d);
                let input =
                    HostInput::new(shape, &q[b], &k[b], &v[b]).with_layout(Layout::Bthd).with_dtype(c.dtype).with_mask(c.mask).with_remainder(c.rem.host(&bias));
                (lens[b] > 0).then(|| reference::forward(&input).unwrap())
            })
            .collect();
        let max_v = v.iter().flatten().fold(0.0f64, |m, x| m.max(x.abs() as f64));
        Data { q, k, v, bias, want, max_v }
    }
}

/// The outputs of one call: `o` as the queries were laid out, and the row outputs.
struct Got {
    o: Vec<f32>,
    rem: Option<Vec<f32>>,
    log_rem: Vec<f32>,
}

/// Checks the rows of one call: sequence `b`'s queries are tokens `p[b] .. p[b] + n[b]`;
/// `packed` says how the row outputs are laid out (`[H, total]` rather than `[B, H, n]`).
fn check(c: &Case, data: &Data, p: &[u32], n: &[u32], packed: bool, got: &Got, what: &str) {
    let (h, d) = (c.heads as usize, c.d as usize);
    let total: u32 = n.iter().sum();
    let (mut o_want, mut o_got) = (Vec::new(), Vec::new());
    let (mut r_want, mut r_got, mut l_want, mut l_got) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut q0 = 0usize;
    for b in 0..n.len() {
        let Some(want) = &data.want[b] else { continue };
        let len = want.rem.len() / h;
        for i in 0..n[b] as usize {
            let t = p[b] as usize + i;
            o_want.extend_from_slice(&want.o[t * h * d..(t + 1) * h * d]);
            o_got.extend_from_slice(&got.o[(q0 + i) * h * d..(q0 + i + 1) * h * d]);
            for hh in 0..h {
                let row = if packed { hh * total as usize + q0 + i } else { (b * h + hh) * n[b] as usize + i };
                r_want.push(want.rem[hh * len + t]);
                l_want.push(want.log_rem[hh * len + t]);
                l_got.push(got.log_rem[row]);
                if let Some(r) = &got.rem {
                    r_got.push(r[row]);
                }
            }
        }
        q0 += n[b] as usize;
    }
    let longest = p.iter().zip(n).map(|(a, b)| a + b).max().unwrap_or(0);
    let rel = if c.dtype == Dtype::F16 { 2f64.powi(-11) } else { 0.0 };
    let abs = if c.tol_path.is_cooperative() { (2f64.powi(-11) + longest as f64 * 2f64.powi(-25)) * data.max_v } else { 0.0 };
    let (e, rms) = check_close(&format!("{what} {c:?} o"), &o_got, &o_want, rel, abs);
    check_close(&format!("{what} {c:?} log_rem"), &l_got, &l_want, 0.0, 0.0);
    assert_eq!(got.rem.is_some(), c.rem == Rem::Return);
    if got.rem.is_some() {
        check_close(&format!("{what} {c:?} rem"), &r_got, &r_want, 0.0, 0.0);
    }
    eprintln!("{what} {c:?}: max |err| {e:.2e}, rel RMS {rms:.2e}");
}

/// The row-output buffers and the remainder of a call with `rows` rows.
struct Rows {
    rem: wgpu::Buffer,
    log_rem: wgpu::Buffer,
    bias: wgpu::Buffer,
}

impl Rows {
    fn new(attn: &Attention, c: &Case, data: &Data, rows: u64) -> Rows {
        Rows { rem: zeros(attn, 4 * rows.max(1)), log_rem: zeros(attn, 4 * rows.max(1)), bias: buffer(attn, &data.bias, c.dtype) }
    }

    fn remainder(&self, c: &Case) -> Remainder<'_> {
        match c.rem {
            Rem::Discard => Remainder::Discard,
            Rem::Return => Remainder::Return(BufferRef::new(&self.rem)),
            Rem::AddToValue => Remainder::AddToValue,
            Rem::AddBias => Remainder::AddBias(BufferRef::new(&self.bias)),
        }
    }
}

fn shape(c: &Case, batch: u32, seq_len: u32) -> Shape {
    Shape::new().with_batch(batch).with_seq_len(seq_len).with_heads(c.heads).with_kv_heads(c.kv_heads).with_head_dim(c.d)
}

/// Runs one call (already described by `call`, missing only its remainder, log rem and path)
/// and reads its outputs.
fn run(attn: &Attention, c: &Case, encoder: wgpu::CommandEncoder, o: &wgpu::Buffer, o_len: usize, rows: &Rows, n_rows: u64) -> Got {
    let es = c.dtype.size();
    let mut out = read(attn, encoder, &[(o, (o_len as u64 * es).max(4), c.dtype), (&rows.rem, 4 * n_rows, Dtype::F32), (&rows.log_rem, 4 * n_rows, Dtype::F32)]);
    let log_rem = out.remove(2);
    let rem = out.remove(1);
    let mut o = out.remove(0);
    o.truncate(o_len);
    Got { o, rem: (c.rem == Rem::Return).then_some(rem), log_rem }
}

/// Prefill in chunks: the cache first gets `pre[b]` tokens of each sequence (a ragged append
/// without queries), then every chunk appends `chunk[b]` new tokens of each and runs their
/// queries against the whole cache: dense (`Forward::on_cache`) when every sequence gets the
/// same number, packed (`with_varlen`) otherwise.
fn prefill(attn: &Attention, c: &Case, pre: &[u32], chunks: &[Vec<u32>], seed: u64) {
    prefill_on(attn, c, pre, chunks, seed, None);
}

/// [`prefill`] on a cache paged with `page_size` tokens per page (pages shuffled over a pool
/// with two spare pages) when given.
fn prefill_on(attn: &Attention, c: &Case, pre: &[u32], chunks: &[Vec<u32>], seed: u64, page_size: Option<u32>) {
    let batch = pre.len();
    let lens: Vec<u32> = (0..batch).map(|b| pre[b] + chunks.iter().map(|ch| ch[b]).sum::<u32>()).collect();
    let data = Data::new(c, &lens, seed);
    let capacity = lens.iter().copied().max().unwrap() + 3;
    let mut desc = KvCacheDesc::new(batch as u32, c.kv_heads, c.d, capacity, c.dtype);
    if let Some(size) = page_size {
        desc = desc.with_pages(size, batch as u32 * capacity.div_ceil(size) + 2);
    }
    let mut cache = KvCache::new(attn, desc).unwrap();
    if page_size.is_some() {
        common::shuffle_pages(attn, &mut cache, seed);
    }
    let kw = (c.kv_heads * c.d) as usize;
    let mut at = vec![0u32; batch];
    let append = |cache: &mut KvCache, enc: &mut wgpu::CommandEncoder, at: &mut Vec<u32>, counts: &[u32]| {
        let most = counts.iter().copied().max().unwrap();
        if most == 0 {
            return;
        }
        let spans: Vec<(u32, u32)> = at.iter().map(|&a| (a, most)).collect();
        let (kb, vb) = (buffer(attn, &gather(&data.k, &spans, kw), c.dtype), buffer(attn, &gather(&data.v, &spans, kw), c.dtype));
        let call = Append::new(TensorRef::bthd(&kb), TensorRef::bthd(&vb), most);
        attn.append(enc, cache, &if counts.iter().all(|&x| x == most) { call } else { call.with_counts(counts) }).unwrap();
        for (a, &n) in at.iter_mut().zip(counts) {
            *a += n;
        }
    };
    let mut enc = attn.device().create_command_encoder(&Default::default());
    append(&mut cache, &mut enc, &mut at, pre);
    attn.queue().submit([enc.finish()]);
    for (ci, chunk) in chunks.iter().enumerate() {
        let mut enc = attn.device().create_command_encoder(&Default::default());
        let p = at.clone();
        append(&mut cache, &mut enc, &mut at, chunk);
        let dense = chunk.iter().all(|&x| x == chunk[0]);
        let total: u32 = chunk.iter().sum();
        if total == 0 {
            continue;
        }
        let spans: Vec<(u32, u32)> = p.iter().zip(chunk).map(|(&a, &n)| (a, n)).collect();
        let q = buffer(attn, &gather(&data.q, &spans, (c.heads * c.d) as usize), c.dtype);
        let o_len = (total * c.heads * c.d) as usize;
        let o = zeros(attn, o_len as u64 * c.dtype.size());
        let n_rows = (total * c.heads) as u64;
        let rows = Rows::new(attn, c, &data, n_rows);
        let mut cu = vec![0u32];
        for &n in chunk {
            cu.push(cu.last().unwrap() + n);
        }
        let call = if dense {
            Forward::on_cache(shape(c, batch as u32, chunk[0]), c.dtype, TensorRef::bthd(&q), &cache, TensorRef::bthd(&o))
        } else {
            Forward::on_cache(shape(c, batch as u32, total), c.dtype, TensorRef::bthd(&q), &cache, TensorRef::bthd(&o)).with_varlen(&cu)
        };
        let call = call.with_mask(c.mask).with_remainder(rows.remainder(c)).with_log_rem(BufferRef::new(&rows.log_rem)).with_path(c.path);
        attn.forward(&mut enc, &call).unwrap();
        let got = run(attn, c, enc, &o, o_len, &rows, n_rows);
        check(c, &data, &p, chunk, !dense, &got, &format!("prefill chunk {ci} {chunk:?} after {p:?}"));
    }
}

/// Packed sequences of `n[b]` queries, their keys in one packed tensor too: `Keys::Queries`
/// (no context), `Keys::Prefix(ctx)` or `Keys::Lengths` (`ctx + n[b] + extra[b]`... as given).
fn varlen(attn: &Attention, c: &Case, n: &[u32], keys: &[u32], how: &str, seed: u64) {
    let data = Data::new(c, keys, seed);
    let (hw, kw) = ((c.heads * c.d) as usize, (c.kv_heads * c.d) as usize);
    let p: Vec<u32> = keys.iter().zip(n).map(|(k, n)| k - n).collect();
    let q_spans: Vec<(u32, u32)> = p.iter().zip(n).map(|(&a, &b)| (a, b)).collect();
    let k_spans: Vec<(u32, u32)> = keys.iter().map(|&k| (0, k)).collect();
    let total: u32 = n.iter().sum();
    let q = buffer(attn, &gather(&data.q, &q_spans, hw), c.dtype);
    let (k, v) = (buffer(attn, &gather(&data.k, &k_spans, kw), c.dtype), buffer(attn, &gather(&data.v, &k_spans, kw), c.dtype));
    let o_len = (total * c.heads * c.d) as usize;
    let o = zeros(attn, o_len as u64 * c.dtype.size());
    let n_rows = (total * c.heads) as u64;
    let rows = Rows::new(attn, c, &data, n_rows);
    let mut cu = vec![0u32];
    for &x in n {
        cu.push(cu.last().unwrap() + x);
    }
    let key_desc = match how {
        "queries" => Keys::Queries,
        "prefix" => Keys::Prefix(p[0]),
        _ => Keys::Lengths(keys),
    };
    let call = Forward::new(shape(c, n.len() as u32, total), c.dtype, TensorRef::bthd(&q), TensorRef::bthd(&k), TensorRef::bthd(&v), TensorRef::bthd(&o))
        .with_varlen(&cu)
        .with_keys(key_desc)
        .with_mask(c.mask)
        .with_remainder(rows.remainder(c))
        .with_log_rem(BufferRef::new(&rows.log_rem))
        .with_path(c.path);
    let mut enc = attn.device().create_command_encoder(&Default::default());
    attn.forward(&mut enc, &call).unwrap();
    let got = run(attn, c, enc, &o, o_len, &rows, n_rows);
    check(c, &data, &p, n, true, &got, &format!("varlen {how} n {n:?} keys {keys:?}"));
}

/// Dense queries (`n` per sequence) against dense keys `[B, max keys, Hkv, D]` of which
/// sequence `b` has `keys[b]` (`Keys::Lengths`; `Keys::Prefix` when all are equal).
fn dense_keys(attn: &Attention, c: &Case, n: u32, keys: &[u32], seed: u64) {
    let data = Data::new(c, keys, seed);
    let (hw, kw) = ((c.heads * c.d) as usize, (c.kv_heads * c.d) as usize);
    let p: Vec<u32> = keys.iter().map(|k| k - n).collect();
    let longest = keys.iter().copied().max().unwrap();
    let q_spans: Vec<(u32, u32)> = p.iter().map(|&a| (a, n)).collect();
    let k_spans: Vec<(u32, u32)> = keys.iter().map(|_| (0, longest)).collect();
    let q = buffer(attn, &gather(&data.q, &q_spans, hw), c.dtype);
    let (k, v) = (buffer(attn, &gather(&data.k, &k_spans, kw), c.dtype), buffer(attn, &gather(&data.v, &k_spans, kw), c.dtype));
    let batch = keys.len() as u32;
    let o_len = (batch * n * c.heads * c.d) as usize;
    let o = zeros(attn, o_len as u64 * c.dtype.size());
    let n_rows = (batch * n * c.heads) as u64;
    let rows = Rows::new(attn, c, &data, n_rows);
    let key_desc = if keys.iter().all(|&x| x == keys[0]) { Keys::Prefix(keys[0] - n) } else { Keys::Lengths(keys) };
    let call = Forward::new(shape(c, batch, n), c.dtype, TensorRef::bthd(&q), TensorRef::bthd(&k), TensorRef::bthd(&v), TensorRef::bthd(&o))
        .with_keys(key_desc)
        .with_mask(c.mask)
        .with_remainder(rows.remainder(c))
        .with_log_rem(BufferRef::new(&rows.log_rem))
        .with_path(c.path);
    let mut enc = attn.device().create_command_encoder(&Default::default());
    attn.forward(&mut enc, &call).unwrap();
    let got = run(attn, c, enc, &o, o_len, &rows, n_rows);
    let ns = vec![n; keys.len()];
    check(c, &data, &p, &ns, false, &got, &format!("dense keys {key_desc:?}"));
}

/// The portable paths this adapter has, and the emulated tensor-core one where `slow` allows.
fn portable_paths(attn: &Attention, dtype: Dtype, d: u32) -> Vec<KernelPath> {
    common::paths(attn, dtype, d).into_iter().filter(|p| !p.is_cooperative()).collect()
}

fn case(heads: u32, kv_heads: u32, d: u32, dtype: Dtype, mask: Mask, rem: Rem, path: KernelPath) -> Case {
    Case { heads, kv_heads, d, dtype, mask, rem, path, tol_path: path }
}

/// Chunked prefill of 1, 7, 64, 300 and 1000 tokens (1,372 in all) on a cache that already
/// holds a few tokens, f16, MQA, on each portable path.
#[test]
fn prefill_chunks_long() {
    let attn = gpu_or_skip!();
    let chunks: Vec<Vec<u32>> = [1, 7, 64, 300, 1000].iter().map(|&n| vec![n, n]).collect();
    for (i, path) in portable_paths(attn, Dtype::F16, 64).into_iter().enumerate() {
        let c = case(4, 1, 64, Dtype::F16, Mask::Strict, REMS[i % 4], path);
        prefill(attn, &c, &[3, 0], &chunks, 10 + i as u64);
    }
}

/// Uneven chunkings, both masks, every remainder mode, GQA and MQA, f32 and f16, every
/// portable path: each chunk's rows equal the full pass's.
#[test]
fn prefill_chunks_every_option() {
    let attn = gpu_or_skip!();
    let mut seed = 100;
    for dtype in [Dtype::F32, Dtype::F16] {
        for (heads, kv_heads, d) in [(4, 2, 32), (3, 1, 80), (2, 2, 16)] {
            for path in portable_paths(attn, dtype, d) {
                // The mask and the remainder mode rotate with the seed: over the 12 runs each
                // mode meets both masks, both dtypes and both paths.
                let mask = if seed % 2 == 0 { Mask::Strict } else { Mask::IncludeCurrent };
                let rem = REMS[(seed as usize / 2 + seed as usize) % 4];
                let c = case(heads, kv_heads, d, dtype, mask, rem, path);
                let chunks: Vec<Vec<u32>> = [5, 1, 37, 64, 17, 2].iter().map(|&n| vec![n; 3]).collect();
                prefill(attn, &c, &[0, 9, 70], &chunks, seed);
                seed += 1;
            }
        }
    }
}

/// Ragged prefill on a cache (what an engine batching several users' messages does): each
/// chunk gives each sequence its own number of new tokens, some none, through `with_varlen`.
#[test]
fn prefill_ragged_on_cache() {
    let attn = gpu_or_skip!();
    for (i, dtype) in [Dtype::F32, Dtype::F16].into_iter().enumerate() {
        for (j, path) in portable_paths(attn, dtype, 64).into_iter().enumerate() {
            let c = case(4, 2, 64, dtype, if j == 0 { Mask::Strict } else { Mask::IncludeCurrent }, REMS[(i + 2 * j) % 4], path);
            let chunks = vec![vec![3, 0, 40, 1], vec![130, 5, 0, 64], vec![0, 0, 1, 0], vec![7, 200, 9, 31]];
            prefill(attn, &c, &[0, 4, 17, 120], &chunks, 200 + (2 * i + j) as u64);
        }
    }
}

/// The tensor-core kernel (emulated: the same kernel with its matrix operations written out)
/// takes the same descriptions.
#[test]
fn serving_on_the_tensor_core_kernel() {
    let attn = gpu_or_skip!();
    let path = KernelPath::EmulatedCooperativeMatrix;
    if attn.forward_variant(Dtype::F16, 64, path).is_err() {
        panic!("the emulated tensor-core path must run wherever f16 does");
    }
    let c = case(2, 1, 64, Dtype::F16, Mask::Strict, Rem::AddToValue, path);
    prefill(attn, &c, &[5, 0], &[vec![1, 1], vec![70, 70], vec![9, 33]], 300);
    let c = Case { rem: Rem::Return, mask: Mask::IncludeCurrent, ..c };
    varlen(attn, &c, &[17, 0, 90], &[17, 0, 90], "queries", 301);
    dense_keys(attn, &c, 20, &[20, 85], 302);
}

/// Prefill on a paged cache (pages of 16 and 256 tokens, shuffled): dense and ragged chunks on
/// every portable path and the (emulated) tensor-core kernel equal the full pass's rows.
#[test]
fn prefill_on_paged_cache() {
    let attn = gpu_or_skip!();
    let ragged = vec![vec![3, 0, 40], vec![130, 5, 0], vec![20, 20, 20], vec![7, 200, 9]];
    // CI: the first portable path (the paged forms of the others compile cold on lavapipe:
    // minutes); SBATTN_FULL_TESTS=1: every one.
    let take = if common::full_tests() { usize::MAX } else { 1 };
    for (i, path) in portable_paths(attn, Dtype::F16, 64).into_iter().take(take).enumerate() {
        let c = case(4, 2, 64, Dtype::F16, Mask::Strict, REMS[(2 * i + 1) % 4], path);
        prefill_on(attn, &c, &[0, 17, 33], &ragged, 500 + i as u64, Some(16));
    }
    let c = case(2, 1, 32, Dtype::F32, Mask::IncludeCurrent, Rem::AddToValue, KernelPath::Auto);
    prefill_on(attn, &c, &[300, 2], &[vec![20, 20], vec![1, 1], vec![0, 290]], 510, Some(256));
    let c = case(2, 1, 64, Dtype::F16, Mask::Strict, Rem::AddToValue, KernelPath::EmulatedCooperativeMatrix);
    prefill_on(attn, &c, &[5, 40], &[vec![70, 70], vec![9, 33]], 520, Some(16));
}

/// Packed batches: sequences of different lengths (empty ones included) in one call, keys
/// packed likewise, with and without an earlier context, each equal to its own full pass.
#[test]
fn varlen_packed() {
    let attn = gpu_or_skip!();
    let mut seed = 400;
    for dtype in [Dtype::F32, Dtype::F16] {
        for path in portable_paths(attn, dtype, 64) {
            for (mask, rem) in [(Mask::Strict, Rem::Return), (Mask::IncludeCurrent, Rem::AddToValue), (Mask::Strict, Rem::AddBias)] {
                let c = case(4, 1, 64, dtype, mask, rem, path);
                let n = [1, 77, 0, 200, 13];
                varlen(attn, &c, &n, &n, "queries", seed);
                varlen(attn, &c, &n, &n.map(|x| x + 30), "prefix", seed + 1);
                varlen(attn, &c, &n, &[5, 77, 3, 260, 13], "lengths", seed + 2);
                seed += 3;
            }
        }
    }
}

/// Dense queries against keys with an earlier context of one length or of one per sequence.
#[test]
fn dense_keys_with_context() {
    let attn = gpu_or_skip!();
    let mut seed = 500;
    for dtype in [Dtype::F32, Dtype::F16] {
        for path in portable_paths(attn, dtype, 50) {
            let c = case(6, 3, 50, dtype, Mask::IncludeCurrent, REMS[seed as usize % 4], path);
            dense_keys(attn, &c, 33, &[100, 100], seed);
            dense_keys(attn, &c, 1, &[1, 64, 300], seed + 1);
            dense_keys(attn, &c, 70, &[70, 71, 200], seed + 2);
            seed += 3;
        }
    }
}

/// Every bad description is a typed error, recorded nothing, and never reaches the GPU.
#[test]
fn bad_descriptions_are_errors() {
    let attn = gpu_or_skip!();
    let c = case(2, 1, 16, Dtype::F32, Mask::Strict, Rem::Discard, KernelPath::Auto);
    let big = zeros(attn, 1 << 16);
    let (q, k, v, o) = (zeros(attn, 1 << 16), zeros(attn, 1 << 16), zeros(attn, 1 << 16), zeros(attn, 1 << 16));
    let t = |b| TensorRef::bthd(b);
    let fwd = |batch, seq_len| Forward::new(shape(&c, batch, seq_len), c.dtype, t(&q), t(&k), t(&v), t(&o));
    let shape_err = |call: &Forward<'_>, what: &str| {
        let mut enc = attn.device().create_command_encoder(&Default::default());
        match attn.forward(&mut enc, call) {
            Err(Error::Shape(m)) => eprintln!("{what}: {m}"),
            other => panic!("{what}: expected a shape error, got {other:?}"),
        }
    };
    // cu_seqlens: one entry per sequence plus one, from 0 to the packed total, never decreasing.
    shape_err(&fwd(2, 10).with_varlen(&[0, 10]), "too few cu_seqlens");
    shape_err(&fwd(2, 10).with_varlen(&[0, 4, 10, 10]), "too many cu_seqlens");
    shape_err(&fwd(2, 10).with_varlen(&[1, 4, 10]), "cu_seqlens not from 0");
    shape_err(&fwd(2, 10).with_varlen(&[0, 4, 9]), "cu_seqlens not to the total");
    shape_err(&fwd(3, 10).with_varlen(&[0, 6, 4, 10]), "decreasing cu_seqlens");
    // Keys: at least the queries, one length per sequence, a total that fits u32.
    shape_err(&fwd(2, 10).with_keys(Keys::Lengths(&[10, 9])), "fewer keys than queries");
    shape_err(&fwd(2, 10).with_keys(Keys::Lengths(&[10])), "one key length for two sequences");
    shape_err(&fwd(1, 10).with_keys(Keys::Prefix(u32::MAX - 3)), "prefix overflow");
    shape_err(&fwd(2, 10).with_varlen(&[0, 0, 10]).with_keys(Keys::Lengths(&[0, 3])), "packed: fewer keys than queries");
    // Key tensors too small for the keys the description names.
    let mut enc = attn.device().create_command_encoder(&Default::default());
    let small = zeros(attn, 4 * 16 * 20);
    let call = Forward::new(shape(&c, 1, 4), c.dtype, t(&q), t(&small), t(&small), t(&o)).with_keys(Keys::Prefix(30));
    assert!(attn.forward(&mut enc, &call).is_err(), "k and v too small for the prefix");
    // The cache: its description must match the call's, and hold the queries' tokens.
    let mut cache = KvCache::new(attn, KvCacheDesc::new(2, 1, 16, 64, Dtype::F32)).unwrap();
    let on = |batch, seq_len, dtype, cache: &KvCache| {
        let mut enc = attn.device().create_command_encoder(&Default::default());
        attn.forward(&mut enc, &Forward::on_cache(shape(&c, batch, seq_len), dtype, t(&q), cache, t(&o)))
    };
    assert!(matches!(on(2, 4, Dtype::F32, &cache), Err(Error::Shape(_))), "queries past an empty cache");
    let mut enc = attn.device().create_command_encoder(&Default::default());
    cache.set_lengths(attn, &mut enc, &[4, 2]).unwrap();
    attn.queue().submit([enc.finish()]);
    assert!(matches!(on(2, 3, Dtype::F32, &cache), Err(Error::Shape(_))), "sequence 1 holds 2 tokens, 3 queries");
    assert!(matches!(on(3, 2, Dtype::F32, &cache), Err(Error::Shape(_))), "batch mismatch");
    assert!(matches!(on(2, 2, Dtype::F16, &cache), Err(Error::Shape(_))), "dtype mismatch");
    on(2, 2, Dtype::F32, &cache).expect("a valid call on the cache");
    // The backward pass of a serving call is not implemented: a typed error, not a wrong answer.
    let lr = zeros(attn, 1 << 12);
    let fwd_cache = Forward::on_cache(shape(&c, 2, 2), c.dtype, t(&q), &cache, t(&o)).with_log_rem(BufferRef::new(&lr));
    let fwd_var = fwd(2, 10).with_varlen(&[0, 3, 10]).with_log_rem(BufferRef::new(&lr));
    for f in [fwd_cache, fwd_var] {
        let bwd = Backward::new(&f, t(&big), t(&q), t(&k), t(&v));
        let mut enc = attn.device().create_command_encoder(&Default::default());
        assert!(matches!(attn.backward(&mut enc, &bwd), Err(Error::Unsupported(_))), "backward of a serving call");
    }
}

/// With the automatic path, chunks of up to 16 queries per sequence run on the decode kernels
/// (longer ones and packed ones on the forward kernels): the rows are the same either way.
#[test]
fn prefill_automatic_path() {
    let attn = gpu_or_skip!();
    for (i, dtype) in [Dtype::F32, Dtype::F16].into_iter().enumerate() {
        let c = case(4, 2, 64, dtype, [Mask::Strict, Mask::IncludeCurrent][i], REMS[1 + i], KernelPath::Auto);
        // Chunks over 16 tokens run on the forward kernels: the tensor-core one where it is the
        // automatic choice (the H200), with its tolerance.
        let tol_path = attn.forward_variant(dtype, c.d, KernelPath::Auto).map_or(KernelPath::Auto, |v| v.path);
        let c = Case { tol_path, ..c };
        let chunks = vec![vec![1, 1], vec![16, 16], vec![17, 17], vec![3, 0], vec![2, 2]];
        prefill(attn, &c, &[40, 1], &chunks, 600 + i as u64);
    }
}

/// The lengths of a real packed batch, long and empty ones among them, with and without an
/// earlier context of 50 tokens per sequence (small heads, so that lavapipe's time stays low).
#[test]
fn varlen_long_and_empty() {
    let attn = gpu_or_skip!();
    let n = [1, 15, 100, 0, 300, 1200, 2000];
    let c = case(2, 1, 16, Dtype::F32, Mask::Strict, Rem::Return, KernelPath::Auto);
    varlen(attn, &c, &n, &n, "queries", 700);
    varlen(attn, &c, &n, &n.map(|x| x + 50), "prefix", 701);
}
