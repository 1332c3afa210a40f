//! Criterion benchmark of the forward kernel: every path the device can run, f32 and f16, on
//! small shapes so that `cargo bench` on a software adapter (lavapipe) ends in a few minutes.
//!
//! Pipelines are compiled and inputs uploaded before the timed region; each timed iteration is
//! one submit of one forward call between two `device.poll(wait)`s (submit to completion; the
//! calls are recorded before the clock starts). Throughput is reported as "elements" per
//! second where one element is one floating-point operation of `Shape::forward_flops()`, so
//! criterion's `Gelem/s` reads as GFLOP/s.
//!
//! `SBATTN_BENCH_SHAPES=4x12x4096x128,...` (BxHxTxD) replaces the shapes, for real GPUs; the
//! command-line tool (`sbattn bench`) is the one for sweeps with GPU timestamps.
//!
//! The `record` group measures the host side alone: the CPU time of recording one forward call
//! (validation, parameters, bind group, compute pass) into an encoder that holds 100 of them,
//! and of the encoder's `finish` per call, with the pipeline compiled beforehand.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use sbattn::{Attention, Dtype, Forward, KernelPath, Shape, TensorRef};
use wgpu::util::DeviceExt;

/// Paths benchmarked, by name; paths the device cannot run are skipped. A new path is one line.
const PATHS: &[(&str, KernelPath)] = &[("subgroup", KernelPath::Subgroup), ("shared", KernelPath::SharedMemory), ("coop", KernelPath::CooperativeMatrix)];

/// Input sets rotated through, so that no iteration reads what the previous one left in cache.
const SETS: usize = 2;

fn shapes() -> Vec<Shape> {
    let parse = |s: &str| -> Option<Shape> {
        let n: Vec<u32> = s.split('x').map(|p| p.trim().parse().ok()).collect::<Option<_>>()?;
        let shape = Shape::new().with_batch(*n.first()?).with_seq_len(*n.get(2)?).with_heads(*n.get(1)?).with_head_dim(*n.get(3)?);
        (n.len() == 4 && shape.validate().is_ok()).then_some(shape)
    };
    if let Ok(list) = std::env::var("SBATTN_BENCH_SHAPES") {
        let shapes: Vec<Shape> = list
            .split(',')
            .filter_map(|s| {
                let shape = parse(s);
                if shape.is_none() {
                    eprintln!("SBATTN_BENCH_SHAPES: ignoring `{s}` (not BxHxTxD)");
                }
                shape
            })
            .collect();
        if !shapes.is_empty() {
            return shapes;
        }
    }
    vec![Shape::new().with_batch(1).with_seq_len(128).with_heads(2).with_head_dim(64), Shape::new().with_batch(1).with_seq_len(256).with_heads(2).with_head_dim(128)]
}

/// Uniform values in [-1, 1) from a 64-bit LCG: non-zero, different per `seed`.
fn data(len: usize, seed: u64, dtype: Dtype) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f32> = (0..len)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    sbattn::to_bytes(&v, dtype)
}

fn forward(c: &mut Criterion) {
    let attn = match Attention::with_default_adapter_blocking() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("forward bench skipped: {e}");
            return;
        }
    };
    let dev = attn.device();
    let caps = attn.capabilities();
    eprintln!("adapter: {} ({:?}, {})", caps.name, caps.backend, caps.driver);
    let wait = || dev.poll(wgpu::PollType::wait_indefinitely()).expect("device lost");
    let mut group = c.benchmark_group("forward");
    // Flat sampling: the same iteration count in every sample, which suits calls of many ms.
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for shape in shapes() {
        let (t, h, d) = (shape.seq_len(), shape.heads(), shape.head_dim());
        let n = (shape.batch() * t * h * d) as usize;
        let name = format!("{}x{h}x{t}x{d}", shape.batch());
        group.throughput(Throughput::Elements(shape.forward_flops() as u64));
        for dtype in [Dtype::F32, Dtype::F16] {
            let upload = |seed| {
                dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("bench input"),
                    contents: &data(n, seed, dtype),
                    usage: wgpu::BufferUsages::STORAGE,
                })
            };
            let sets: Vec<[wgpu::Buffer; 3]> =
                (0..SETS as u64).map(|s| [upload(3 * s + 1), upload(3 * s + 2), upload(3 * s + 3)]).collect();
            let o = dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some("bench o"),
                size: (n as u64 * dtype.size()).next_multiple_of(4),
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            });
            for &(path_name, path) in PATHS {
                if let Err(e) = attn.forward_variant(dtype, d, path) {
                    eprintln!("skip {dtype:?} {path_name} at D={d}: {e}");
                    continue;
                }
                let record = |set: usize| {
                    let [q, k, v] = &sets[set % SETS];
                    let t = TensorRef::bthd;
                    let call = Forward::new(shape, dtype, t(q), t(k), t(v), t(&o)).with_path(path);
                    let mut enc = dev.create_command_encoder(&Default::default());
                    attn.forward(&mut enc, &call).expect("forward");
                    enc.finish()
                };
                // Compile before timing.
                attn.queue().submit([record(0)]);
                wait();
                let id = BenchmarkId::new(format!("{dtype:?}/{path_name}").to_lowercase(), &name);
                group.bench_function(id, |b| {
                    b.iter_custom(|iters| {
                        let mut total = Duration::ZERO;
                        for i in 0..iters {
                            let cmd = record(i as usize);
                            wait();
                            let t0 = Instant::now();
                            attn.queue().submit([cmd]);
                            wait();
                            total += t0.elapsed();
                        }
                        total
                    })
                });
            }
        }
    }
    group.finish();
}

/// The CPU cost of recording one call, and of `finish` per call.
fn record(c: &mut Criterion) {
    let Ok(attn) = Attention::with_default_adapter_blocking() else { return };
    let dev = attn.device();
    let shape = Shape::new().with_seq_len(128).with_heads(2).with_head_dim(64);
    let bytes = 128 * 2 * 64 * 4;
    let buf = || sbattn::zeroed(dev, "bench", bytes);
    let (q, k, v, o) = (buf(), buf(), buf(), buf());
    let t = TensorRef::bthd;
    let call = Forward::new(shape, Dtype::F32, t(&q), t(&k), t(&v), t(&o));
    let mut enc = dev.create_command_encoder(&Default::default());
    attn.forward(&mut enc, &call).expect("forward"); // compiles
    attn.queue().submit([enc.finish()]);
    const CALLS: u64 = 100;
    let mut group = c.benchmark_group("record");
    group.throughput(Throughput::Elements(CALLS));
    group.bench_function("forward x100", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut enc = dev.create_command_encoder(&Default::default());
                let t0 = Instant::now();
                for _ in 0..CALLS {
                    attn.forward(&mut enc, &call).expect("forward");
                }
                total += t0.elapsed();
                drop(enc.finish());
            }
            total
        })
    });
    group.bench_function("finish of 100 calls", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut enc = dev.create_command_encoder(&Default::default());
                for _ in 0..CALLS {
                    attn.forward(&mut enc, &call).expect("forward");
                }
                let t0 = Instant::now();
                let cmd = enc.finish();
                total += t0.elapsed();
                drop(cmd);
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, record, forward);
criterion_main!(benches);
