//! Properties that hold for any input (docs/ALGORITHM.md, "Invariants a test can check"), several
//! calls in one encoder, and the early-exit bound.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{buffer, compare, paths, read, zeros, Rng};
use sbattn::{
    reference, KernelPath, round_to, BufferRef, Dtype, Forward, HostInput, HostRemainder, Layout, Mask, Remainder, Shape, Strides,
    TensorRef,
};

/// The reference's weights: every row of `A` is non-negative and sums with `rem` to 1.
#[test]
fn reference_weights_and_rem_sum_to_one() {
    let shape = Shape::new().with_batch(1).with_seq_len(90).with_heads(1).with_head_dim(16);
    let mut rng = Rng::new(7);
    let q = rng.normals(90 * 16, 1.5);
    let k = rng.normals(90 * 16, 1.5);
    for mask in [Mask::Strict, Mask::IncludeCurrent] {
        let input = HostInput::new(shape, &q, &k, &k).with_mask(mask).with_remainder(HostRemainder::Return);
        let a = reference::weights(&input, 0, 0).unwrap();
        let out = reference::forward(&input).unwrap();
        for i in 0..90 {
            let row = &a[i * 90..(i + 1) * 90];
            assert!(row.iter().all(|&x| x >= 0.0));
            let s: f64 = row.iter().sum::<f64>() + out.rem[i];
            assert!((s - 1.0).abs() < 1e-12, "row {i}: {s}");
            let visible = mask.visible(i as u32) as usize;
            assert!(row[visible..].iter().all(|&x| x == 0.0), "row {i} sees the future");
        }
    }
}

/// With v = 1 everywhere, o_i = sum_j A_ij, so o_i + rem_i = 1 on the GPU too; AddToValue
/// then gives exactly 1.
#[test]
fn gpu_weights_and_rem_sum_to_one() {
    let attn = gpu_or_skip!();
    let shape = Shape::new().with_batch(2).with_seq_len(150).with_heads(3).with_head_dim(40);
    let n = (2 * 150 * 3 * 40) as usize;
    let mut rng = Rng::new(11);
    for dtype in [Dtype::F32, Dtype::F16] {
        if dtype == Dtype::F16 && !attn.capabilities().f16() {
            continue;
        }
        let q = round_to(&rng.normals(n, 1.0), dtype);
        let k = round_to(&rng.normals(n, 1.0), dtype);
        let ones = vec![1.0f32; n];
        for path in paths(attn, dtype, 40) {
            for mask in [Mask::Strict, Mask::IncludeCurrent] {
                let base = HostInput::new(shape, &q, &k, &ones).with_dtype(dtype).with_mask(mask).with_path(path);
                let out = attn.run_host_blocking(&base.with_remainder(HostRemainder::Return)).unwrap();
                let rem = out.rem.unwrap();
                let tol = if dtype == Dtype::F16 { 2e-3 } else { 2e-5 };
                for (idx, &r) in rem.iter().enumerate() {
                    assert!((0.0..=1.0).contains(&r), "rem {r}");
                    let (bh, i) = (idx / 150, idx % 150);
                    let (b, h) = (bh / 3, bh % 3);
                    let o = out.o[((b * 150 + i) * 3 + h) * 40];
                    assert!((o + r - 1.0).abs() < tol, "{dtype:?} {path:?} {mask:?}: o {o} + rem {r} != 1");
                }
                let out = attn.run_host_blocking(&base.with_remainder(HostRemainder::AddToValue)).unwrap();
                assert!(out.o.iter().all(|&x| (x - 1.0).abs() < tol), "{dtype:?} {path:?}: AddToValue with v = 1");
            }
        }
    }
}

/// Row 0 without attend_current has no keys: o = 0, rem = 1, log rem = 0, exactly.
#[test]
fn row_zero_is_empty() {
    let attn = gpu_or_skip!();
    let shape = Shape::new().with_batch(1).with_seq_len(40).with_heads(2).with_head_dim(32);
    let mut rng = Rng::new(3);
    let x = rng.normals(40 * 2 * 32, 1.0);
    for dtype in [Dtype::F32, Dtype::F16] {
        for path in paths(attn, dtype, 32) {
            let input = HostInput::new(shape, &x, &x, &x).with_dtype(dtype).with_path(path).with_remainder(HostRemainder::Return);
            let out = attn.run_host_blocking(&input).unwrap();
            for h in 0..2 {
                assert!(out.o[h * 32..(h + 1) * 32].iter().all(|&v| v == 0.0), "{path:?}");
                assert_eq!(out.rem.as_ref().unwrap()[h * 40], 1.0);
                assert_eq!(out.log_rem[h * 40], 0.0);
            }
        }
    }
}

/// With attend_current and beta_ii -> 1 (k = q, large scale), each row takes its own value.
#[test]
fn current_token_takes_the_stick() {
    let attn = gpu_or_skip!();
    let shape = Shape::new().with_batch(1).with_seq_len(70).with_heads(2).with_head_dim(16);
    let n = 70 * 2 * 16;
    let mut rng = Rng::new(5);
    let q = rng.normals(n, 1.0);
    let v = rng.normals(n, 1.0);
    for path in paths(attn, Dtype::F32, 16) {
        let input = HostInput::new(shape, &q, &q, &v).with_mask(Mask::IncludeCurrent).with_scale(Some(200.0)).with_path(path);
        let out = attn.run_host_blocking(&input).unwrap();
        // z_ii = 200 |q_i|^2 is huge, so beta_ii = 1 to f32 precision.
        for (g, w) in out.o.iter().zip(&v) {
            assert!((g - w).abs() < 1e-5, "{path:?}: {g} vs {w}");
        }
    }
}

/// Logits of +-1e4 give finite outputs that match the reference. q, k in {-1, 0, 1} make the
/// dot products exact, so logits are exact multiples of 1e4 and the comparison is tight.
#[test]
fn huge_logits_stay_finite_and_exact() {
    let attn = gpu_or_skip!();
    let shape = Shape::new().with_batch(1).with_seq_len(100).with_heads(2).with_head_dim(8);
    let n = 100 * 2 * 8;
    let mut rng = Rng::new(9);
    let mut tern = |_| [-1.0f32, 0.0, 1.0][(rng.next_u64() % 3) as usize];
    let q: Vec<f32> = (0..n).map(&mut tern).collect();
    let k: Vec<f32> = (0..n).map(&mut tern).collect();
    let v = Rng::new(10).normals(n, 1.0);
    for dtype in [Dtype::F32, Dtype::F16] {
        let v = round_to(&v, dtype);
        for path in paths(attn, dtype, 8) {
            for mask in [Mask::Strict, Mask::IncludeCurrent] {
                for scale in [1e4f32, -1e4] {
                    let input = HostInput::new(shape, &q, &k, &v)
                        .with_dtype(dtype)
                        .with_path(path)
                        .with_mask(mask)
                        .with_scale(Some(scale))
                        .with_remainder(HostRemainder::Return);
                    let out = attn.run_host_blocking(&input).unwrap();
                    let want = reference::forward(&input).unwrap();
                    let tol = if dtype == Dtype::F16 { 5e-3 } else { 1e-5 };
                    let e = compare("o", &out.o, &want.o);
                    assert!(e.max_abs < tol, "{dtype:?} {path:?} {mask:?} {scale}: {e:?}");
                    let e = compare("rem", out.rem.as_ref().unwrap(), &want.rem);
                    assert!(e.max_abs < 1e-6, "{dtype:?} {path:?} {mask:?} {scale}: rem {e:?}");
                    // log rem reaches -1e4 * (number of keys): compare relatively.
                    for (g, w) in out.log_rem.iter().zip(&want.log_rem) {
                        assert!(g.is_finite() && (*g as f64 - w).abs() <= 1e-6 * (1.0 + w.abs()), "{g} vs {w}");
                    }
                }
            }
        }
    }
    // Random (inexact) huge logits: finite, rem in [0, 1].
    let q = Rng::new(12).normals(n, 300.0);
    for path in paths(attn, Dtype::F32, 8) {
        let input = HostInput::new(shape, &q, &q, &v).with_path(path).with_remainder(HostRemainder::Return);
        let out = attn.run_host_blocking(&input).unwrap();
        assert!(out.o.iter().all(|x| x.is_finite()));
        assert!(out.rem.unwrap().iter().all(|r| (0.0..=1.0).contains(r)));
    }
}

/// Early exit: the output moves by at most eps * max|v|, rem by less than eps; on inputs
/// whose sticks run out slowly enough that the walk stops near the threshold it really does
/// stop (outputs differ from the full walk), and eps = 0 is the full walk bit for bit.
#[test]
fn early_exit_bound() {
    let attn = gpu_or_skip!();
    let (t, h, d) = (700u32, 2u32, 32u32);
    let shape = Shape::new().with_batch(1).with_seq_len(t).with_heads(h).with_head_dim(d);
    let mut rng = Rng::new(21);
    // q = u + noise, k = -u + noise with u = +-1 per head: logits near -2.5 at this scale,
    // about 0.08 of log-stick per key, so exp(carry) crosses 1e-2 and 1e-4 after a few tiles.
    let u: Vec<f32> = (0..h * d).map(|_| if rng.next_u64().is_multiple_of(2) { 1.0 } else { -1.0 }).collect();
    let mut make = |sign: f32| -> Vec<f32> {
        (0..t * h * d).map(|x| sign * u[(x % (h * d)) as usize] + 0.3 * rng.normal()).collect()
    };
    let (q, k) = (make(1.0), make(-1.0));
    let v = rng.normals((t * h * d) as usize, 1.0);
    let scale = Some(2.5 / d as f32);
    let max_v = v.iter().fold(0.0f32, |m, x| m.max(x.abs())) as f64;
    for dtype in [Dtype::F32, Dtype::F16] {
        let (q, k, v) = (round_to(&q, dtype), round_to(&k, dtype), round_to(&v, dtype));
        let input = HostInput::new(shape, &q, &k, &v).with_dtype(dtype).with_scale(scale).with_remainder(HostRemainder::Return);
        let want = reference::forward(&input).unwrap();
        for path in paths(attn, dtype, d) {
            let base = input.with_path(path);
            let full = attn.run_host_blocking(&base).unwrap();
            let zero = attn.run_host_blocking(&base.with_early_exit(0.0)).unwrap();
            assert_eq!(full.o, zero.o);
            for eps in [1e-2f32, 1e-4] {
                let out = attn.run_host_blocking(&base.with_early_exit(eps)).unwrap();
                // Each f16 output may also round the other way: one f16 ulp, 2^-10 relative.
                let ulp = if dtype == Dtype::F16 { 2f64.powi(-10) } else { 1e-6 };
                let mut moved = 0.0f64;
                for (a, b) in out.o.iter().zip(&full.o) {
                    let (a, b) = (*a as f64, *b as f64);
                    let bound = eps as f64 * max_v + ulp * a.abs().max(b.abs()) + 1e-6;
                    assert!((a - b).abs() <= bound, "{dtype:?} {path:?} eps {eps}: {a} vs full walk {b}");
                    moved = moved.max((a - b).abs());
                }
                assert!(moved > 0.0, "{dtype:?} {path:?} eps {eps}: no early exit happened");
                let rem = out.rem.unwrap();
                let mut stopped = 0;
                for (g, w) in rem.iter().zip(&want.rem) {
                    let g = *g as f64;
                    assert!(g >= w - 1e-6 && g - w < eps as f64 + 1e-6, "{dtype:?} {path:?} eps {eps}: rem {g} vs {w}");
                    stopped += (g - w > 1e-6) as u32;
                }
                eprintln!("{dtype:?} {path:?} eps {eps}: max |o change| {moved:.2e}, {stopped} rows stopped early");
                assert!(stopped > 0);
            }
        }
    }
}

/// Several calls with different shapes, dtypes, masks, paths and remainder modes recorded
/// into one encoder and submitted once: every one correct.
#[test]
fn many_calls_one_encoder() {
    let attn = gpu_or_skip!();
    let dev = attn.device();
    let cases = [
        (Shape::new().with_batch(1).with_seq_len(33).with_heads(2).with_head_dim(16), Dtype::F32, Mask::Strict, Layout::Bthd),
        (Shape::new().with_batch(2).with_seq_len(100).with_heads(4).with_head_dim(64).with_kv_heads(2), Dtype::F16, Mask::IncludeCurrent, Layout::Bhtd),
        (Shape::new().with_batch(1).with_seq_len(7).with_heads(3).with_head_dim(80).with_kv_heads(1), Dtype::F32, Mask::IncludeCurrent, Layout::Bthd),
        (Shape::new().with_batch(3).with_seq_len(70).with_heads(2).with_head_dim(128), Dtype::F16, Mask::Strict, Layout::Bthd),
    ];
    let mut enc = dev.create_command_encoder(&Default::default());
    let mut pending = Vec::new();
    let mut rng = Rng::new(77);
    for (ci, &(shape, dtype, mask, layout)) in cases.iter().enumerate() {
        let nq = (shape.batch() * shape.seq_len() * shape.heads() * shape.head_dim()) as usize;
        let nkv = (shape.batch() * shape.seq_len() * shape.kv_heads() * shape.head_dim()) as usize;
        let (q, k, v) = (round_to(&rng.normals(nq, 1.0), dtype), round_to(&rng.normals(nkv, 1.0), dtype), round_to(&rng.normals(nkv, 1.0), dtype));
        let (qb, kb, vb) = (buffer(attn, &q, dtype), buffer(attn, &k, dtype), buffer(attn, &v, dtype));
        let o_bytes = nq as u64 * dtype.size();
        let ob = zeros(attn, o_bytes);
        let rows = shape.rows();
        let rb = zeros(attn, rows * 4);
        let path = [KernelPath::Auto, KernelPath::SharedMemory][ci % 2];
        let t = |b| TensorRef::contiguous(b, layout);
        let call = Forward::new(shape, dtype, t(&qb), t(&kb), t(&vb), t(&ob))
            .with_mask(mask)
            .with_path(path)
            .with_remainder(Remainder::Return(BufferRef::new(&rb)));
        attn.forward(&mut enc, &call).unwrap();
        pending.push((shape, dtype, mask, layout, q, k, v, ob, o_bytes, rb, rows));
    }
    let bufs: Vec<(&wgpu::Buffer, u64, Dtype)> =
        pending.iter().flat_map(|p| [(&p.7, p.8, p.1), (&p.9, p.10 * 4, Dtype::F32)]).collect();
    let got = read(attn, enc, &bufs);
    for (i, (shape, dtype, mask, layout, q, k, v, ..)) in pending.iter().enumerate() {
        let input = HostInput::new(*shape, q, k, v).with_layout(*layout).with_mask(*mask).with_remainder(HostRemainder::Return);
        let want = reference::forward(&input).unwrap();
        let tol = if *dtype == Dtype::F16 { 3e-3 } else { 2e-5 };
        let e = compare("o", &got[2 * i], &want.o);
        assert!(e.max_abs < tol * (1.0 + e.ref_max), "{shape:?}: {e:?}");
        let e = compare("rem", &got[2 * i + 1], &want.rem);
        assert!(e.max_abs < 2e-5, "{shape:?}: rem {e:?}");
    }
}

/// A fused QKV buffer ([B, T, H + 2 Hkv, D]), non-zero element offsets that are not aligned to
/// the binding alignment, and the [B, H, T, D] layout all read the right elements.
#[test]
fn fused_qkv_and_unaligned_offsets() {
    let attn = gpu_or_skip!();
    let dev = attn.device();
    let (b, t, h, hk, d) = (2u32, 45u32, 4u32, 2u32, 24u32);
    let shape = Shape::new().with_batch(b).with_seq_len(t).with_heads(h).with_head_dim(d).with_kv_heads(hk);
    let width = (h + 2 * hk) * d; // per token
    let pad = 37u64; // elements before the fused tensor
    let mut rng = Rng::new(31);
    let fused = rng.normals(pad as usize + (b * t * width) as usize, 1.0);
    // Unpack to contiguous [B, T, heads, D] for the reference.
    let unpack = |first: u32, heads: u32| -> Vec<f32> {
        let mut out = Vec::new();
        for bi in 0..b {
            for ti in 0..t {
                let base = pad as usize + ((bi * t + ti) * width + first * d) as usize;
                out.extend_from_slice(&fused[base..base + (heads * d) as usize]);
            }
        }
        out
    };
    let (q, k, v) = (unpack(0, h), unpack(h, hk), unpack(h + hk, hk));
    let want = reference::forward(&HostInput::new(shape, &q, &k, &v)).unwrap();
    let buf = buffer(attn, &fused, Dtype::F32);
    let fused_strides = Strides { batch: (t * width) as u64, token: width as u64, head: d as u64 };
    let strides = |off: u64| TensorRef::strided(&buf, fused_strides).at_offset(pad + off);
    // o in [B, H, T, D] at an odd offset.
    let o_off = 5u64;
    let o_len = (b * h * t * d) as u64;
    let ob = zeros(attn, (o_off + o_len) * 4);
    for path in paths(attn, Dtype::F32, d) {
        let o = TensorRef::bhtd(&ob).at_offset(o_off);
        let call = Forward::new(shape, Dtype::F32, strides(0), strides((h * d) as u64), strides(((h + hk) * d) as u64), o).with_path(path);
        let mut enc = dev.create_command_encoder(&Default::default());
        attn.forward(&mut enc, &call).unwrap();
        let all = read(attn, enc, &[(&ob, (o_off + o_len) * 4, Dtype::F32)]).remove(0);
        // Back to [B, T, H, D] for the comparison.
        let mut got = vec![0.0f32; o_len as usize];
        for bi in 0..b {
            for hi in 0..h {
                for ti in 0..t {
                    for di in 0..d {
                        let src = o_off as u32 + ((bi * h + hi) * t + ti) * d + di;
                        got[(((bi * t + ti) * h + hi) * d + di) as usize] = all[src as usize];
                    }
                }
            }
        }
        let e = compare("o", &got, &want.o);
        assert!(e.max_abs < 2e-5, "{path:?}: {e:?}");
    }
}
