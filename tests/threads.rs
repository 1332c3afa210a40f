//! One `Attention` shared by threads: four threads recording different problems into their own
//! encoders at once all get correct results, each kernel variant is compiled exactly once
//! (also when all four want the same one at once), and threads wanting different variants
//! compile them at the same time (no lock is held while compiling).
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::sync::Barrier;
use std::time::Instant;

use common::{compare, Rng};
use sbattn::{reference, round_to, Attention, Dtype, HostInput, Shape};

/// A problem per thread: distinct head dims (and dtypes), so distinct kernel variants.
fn problem(i: usize) -> (Shape, Dtype) {
    let d = [16u32, 48, 80, 112][i % 4];
    let dtype = if i.is_multiple_of(2) { Dtype::F32 } else { Dtype::F16 };
    (Shape::new().with_batch(1 + (i % 2) as u32).with_seq_len(70 + 13 * i as u32).with_heads(2).with_head_dim(d), dtype)
}

fn run(attn: &Attention, shape: Shape, dtype: Dtype, seed: u64) {
    let n = (shape.batch() * shape.seq_len() * shape.heads() * shape.head_dim()) as usize;
    let mut rng = Rng::new(seed);
    let (q, k, v) = (round_to(&rng.normals(n, 1.0), dtype), round_to(&rng.normals(n, 1.0), dtype), round_to(&rng.normals(n, 1.0), dtype));
    let input = HostInput::new(shape, &q, &k, &v).with_dtype(dtype);
    let got = attn.run_host_blocking(&input).expect("run");
    let want = reference::forward(&input).expect("reference");
    let e = compare("o", &got.o, &want.o);
    let tol = if dtype == Dtype::F16 { 3e-3 } else { 2e-5 };
    assert!(e.max_abs <= tol * (1.0 + e.ref_max), "{shape:?} {dtype:?}: {e:?}");
}

#[test]
fn four_threads_share_one_context() {
    if common::attention().is_none() {
        return;
    }
    let attn = Attention::with_default_adapter_blocking().expect("own context");
    let f16 = attn.capabilities().f16();
    let problems: Vec<(Shape, Dtype)> = (0..4).map(problem).map(|(s, d)| (s, if f16 { d } else { Dtype::F32 })).collect();
    let distinct: std::collections::HashSet<_> =
        problems.iter().map(|(s, d)| attn.forward_variant(*d, s.head_dim(), sbattn::KernelPath::Auto).unwrap()).collect();

    // Four threads, four variants, all starting their first call together.
    let start = Barrier::new(4);
    let t0 = Instant::now();
    let first: Vec<f64> = std::thread::scope(|scope| {
        let handles: Vec<_> = problems
            .iter()
            .enumerate()
            .map(|(i, &(shape, dtype))| {
                let (attn, start) = (&attn, &start);
                scope.spawn(move || {
                    start.wait();
                    let t = Instant::now();
                    run(attn, shape, dtype, 10 + i as u64);
                    let first = t.elapsed().as_secs_f64();
                    for round in 0..3 {
                        run(attn, shape, dtype, 100 + 10 * round + i as u64);
                    }
                    first
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let parallel = t0.elapsed().as_secs_f64();
    assert_eq!(attn.compiled_kernels(), distinct.len(), "each variant compiled once");
    eprintln!(
        "4 threads, {} variants: first calls {:?} s, all {parallel:.2} s",
        distinct.len(),
        first.iter().map(|x| (x * 100.0).round() / 100.0).collect::<Vec<_>>()
    );

    // Four threads wanting one new variant at once: compiled once.
    let before = attn.compiled_kernels();
    let shape = Shape::new().with_seq_len(33).with_heads(3).with_head_dim(24);
    std::thread::scope(|scope| {
        for i in 0..4 {
            let (attn, start) = (&attn, &start);
            scope.spawn(move || {
                start.wait();
                run(attn, shape, Dtype::F32, 200 + i);
            });
        }
    });
    assert_eq!(attn.compiled_kernels(), before + 1, "one variant wanted by four threads compiles once");
}
