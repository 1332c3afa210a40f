//! Decode-step benchmark: one new token per sequence against a KV cache, all heads, f16.
//!
//! For B in {1, 8, 32}, H = 32, Hkv = 8, D = 128 and cache lengths {4096, 32768, 131072}, times
//! [`Decoder::decode`] (split-K partials + merge) and reports the median and best time per step,
//! the bytes of K and V a step must read (`2 * B * Hkv * L * D * 2`) and the bandwidth that
//! implies, plus a buffer-copy bandwidth measured in the same run for reference.
//!
//! ```text
//! cargo build --release --example bench_decode
//! target/release/examples/bench_decode --json decode.json [--iters 50] [--lanes auto,8,16,32]
//! target/release/examples/bench_decode --quick            # tiny sizes, for a smoke test
//! ```
//!
//! Timing: GPU timestamps written into the encoder around every step when the device has
//! `TIMESTAMP_QUERY_INSIDE_ENCODERS`; otherwise wall time of many steps between two
//! `device.poll(wait)`, divided by the step count (one sample per batch of steps).
//!
//! The caches hold zeros (timing does not depend on the values: early exit is off, so every
//! key is read). A batch whose cache would exceed the device's largest storage binding is split
//! over several caches, decoded one after the other in the same step (the JSON says how many).

use std::fmt::Write as _;
use std::time::Instant;

use sbattn::decode::DecodePlan;
use sbattn::{Attention, Decode, Decoder, Dtype, KvCache, KvCacheDesc, Mask, TensorRef};
use wgpu::util::DeviceExt;

struct Args {
    json: Option<String>,
    quick: bool,
    iters: u32,
    lanes: Vec<Option<u32>>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args { json: None, quick: false, iters: 30, lanes: vec![None] };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--quick" => a.quick = true,
            "--json" => a.json = Some(it.next().ok_or("--json needs a path")?),
            "--iters" => {
                let v = it.next().ok_or("--iters needs a value")?;
                a.iters = v.parse().map_err(|e| format!("--iters {v}: {e}"))?;
            }
            "--lanes" => {
                let v = it.next().ok_or("--lanes needs a list such as auto,8,16")?;
                a.lanes = v
                    .split(',')
                    .map(|x| if x == "auto" { Ok(None) } else { x.parse().map(Some).map_err(|e| format!("--lanes {x}: {e}")) })
                    .collect::<Result<_, _>>()?;
            }
            "--bench" => {} // passed by `cargo bench`-style runners
            _ => return Err(format!("unknown flag {flag} (flags: --json PATH, --quick, --iters N, --lanes auto,8,16)")),
        }
    }
    if a.iters == 0 {
        return Err("--iters must be positive".into());
    }
    Ok(a)
}

/// One measured configuration.
struct Row {
    batch: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    cache_len: u32,
    lanes: Option<u32>,
    plan: Option<DecodePlan>,
    caches: u32,
    times_ms: Vec<f64>,
    kv_bytes: f64,
    error: Option<String>,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() { f64::NAN } else { s[s.len() / 2] }
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

/// Times `iters` executions of `record` (each one step), returning milliseconds per step.
struct Timer {
    timestamps: bool,
    period_ns: f64,
}

impl Timer {
    fn time(
        &self,
        attn: &Attention,
        iters: u32,
        record: &mut dyn FnMut(&mut wgpu::CommandEncoder) -> Result<(), sbattn::Error>,
    ) -> Result<Vec<f64>, Box<dyn std::error::Error>> {
        let dev = attn.device();
        // Warm-up: compiles pipelines, faults pages in.
        let mut enc = dev.create_command_encoder(&Default::default());
        record(&mut enc)?;
        record(&mut enc)?;
        attn.queue().submit([enc.finish()]);
        dev.poll(wgpu::PollType::wait_indefinitely())?;
        if self.timestamps {
            let qs = dev.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("bench timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2 * iters,
            });
            let bytes = 16 * iters as u64;
            let resolve = dev.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: bytes,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let mut enc = dev.create_command_encoder(&Default::default());
            for i in 0..iters {
                enc.write_timestamp(&qs, 2 * i);
                record(&mut enc)?;
                enc.write_timestamp(&qs, 2 * i + 1);
            }
            enc.resolve_query_set(&qs, 0..2 * iters, &resolve, 0);
            let rb = sbattn::readback_later(dev, &mut enc, &resolve, bytes);
            attn.queue().submit([enc.finish()]);
            let raw = pollster::block_on(rb.read(dev))?;
            let ticks: Vec<u64> = raw.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect();
            Ok(ticks.chunks_exact(2).map(|t| t[1].wrapping_sub(t[0]) as f64 * self.period_ns * 1e-6).collect())
        } else {
            let batches = 5;
            let mut out = Vec::new();
            for _ in 0..batches {
                let t0 = Instant::now();
                let mut enc = dev.create_command_encoder(&Default::default());
                for _ in 0..iters {
                    record(&mut enc)?;
                }
                attn.queue().submit([enc.finish()]);
                dev.poll(wgpu::PollType::wait_indefinitely())?;
                out.push(t0.elapsed().as_secs_f64() * 1e3 / iters as f64);
            }
            Ok(out)
        }
    }
}

/// Allocates under an out-of-memory error scope; `None` if the device refused.
fn try_alloc<T>(dev: &wgpu::Device, f: impl FnOnce() -> T) -> Option<T> {
    let scope = dev.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let v = f();
    pollster::block_on(scope.pop()).is_none().then_some(v)
}

#[allow(clippy::too_many_arguments)]
fn measure(
    attn: &Attention,
    dec: &Decoder,
    timer: &Timer,
    iters: u32,
    dtype: Dtype,
    (batch, heads, kv_heads, head_dim, len): (u32, u32, u32, u32, u32),
    lanes: Option<u32>,
) -> Row {
    let es = dtype.size();
    let mut row = Row {
        batch,
        heads,
        kv_heads,
        head_dim,
        cache_len: len,
        lanes,
        plan: None,
        caches: 0,
        times_ms: Vec::new(),
        kv_bytes: 2.0 * batch as f64 * kv_heads as f64 * len as f64 * head_dim as f64 * es as f64,
        error: None,
    };
    let dev = attn.device();
    let l = dev.limits();
    // Sequences per cache: each of K and V must fit one binding with 32-bit element indices.
    let per_seq = kv_heads as u64 * len as u64 * head_dim as u64 * es;
    let max_bytes = l.max_storage_buffer_binding_size.min(l.max_buffer_size).min((u32::MAX as u64) * es);
    let per_cache = (max_bytes / per_seq).min(batch as u64) as u32;
    if per_cache == 0 {
        row.error = Some(format!("one sequence needs {per_seq} bytes per cache tensor, over the {max_bytes}-byte limit"));
        return row;
    }
    let n_caches = batch.div_ceil(per_cache);
    let sizes: Vec<u32> = (0..n_caches).map(|i| batch / n_caches + (i < batch % n_caches) as u32).collect();
    row.caches = n_caches;
    let result = (|| -> Result<Vec<f64>, Box<dyn std::error::Error>> {
        let mut caches = Vec::new();
        let mut enc = dev.create_command_encoder(&Default::default());
        for &b in &sizes {
            let desc = KvCacheDesc::new(b, kv_heads, head_dim, len, dtype);
            let mut cache = try_alloc(dev, || KvCache::new(dev, desc)).ok_or("out of memory for the KV cache")??;
            cache.set_lengths(&mut enc, &vec![len; b as usize])?;
            caches.push(cache);
        }
        attn.queue().submit([enc.finish()]);
        let qo = (batch * heads * head_dim) as usize;
        let q: Vec<f32> = (0..qo).map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 0.1).collect();
        let q = dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("q"),
            contents: &sbattn::to_bytes(&q, dtype),
            usage: wgpu::BufferUsages::STORAGE,
        });
        let o = dev.create_buffer(&wgpu::BufferDescriptor {
            label: Some("o"),
            size: qo as u64 * es,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let calls: Vec<Decode<'_>> = {
            let mut first = 0u64;
            caches
                .iter()
                .map(|c| {
                    let at = first * (heads * head_dim) as u64;
                    first += c.desc().batch as u64;
                    let t = |buf| TensorRef::bthd(buf, 1, heads, head_dim).at_offset(at);
                    Decode { mask: Mask::IncludeCurrent, lanes_per_key: lanes, ..Decode::new(c, heads, 1, t(&q), t(&o)) }
                })
                .collect()
        };
        row.plan = Some(dec.plan(&calls[0])?);
        let mut record = |enc: &mut wgpu::CommandEncoder| calls.iter().try_for_each(|c| dec.decode(enc, c));
        timer.time(attn, iters, &mut record)
    })();
    match result {
        Ok(t) => row.times_ms = t,
        Err(e) => row.error = Some(e.to_string()),
    }
    row
}

/// Copy bandwidth: `size` bytes from one buffer to another, reported as bytes read plus
/// bytes written per second.
fn copy_bandwidth(attn: &Attention, timer: &Timer, iters: u32, size: u64) -> Option<(u64, Vec<f64>)> {
    let dev = attn.device();
    let usage = wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
    let make = || dev.create_buffer(&wgpu::BufferDescriptor { label: Some("copy"), size, usage, mapped_at_creation: false });
    let (a, b) = try_alloc(dev, || (make(), make()))?;
    let mut record = |enc: &mut wgpu::CommandEncoder| {
        enc.copy_buffer_to_buffer(&a, 0, &b, 0, size);
        Ok(())
    };
    timer.time(attn, iters, &mut record).ok().map(|t| (size, t))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let attn = Attention::with_default_adapter_blocking()?;
    let dec = Decoder::new(attn.device());
    let caps = attn.capabilities();
    let dtype = if caps.f16() { Dtype::F16 } else { Dtype::F32 };
    let f = caps.features;
    let timer = Timer {
        timestamps: f.contains(wgpu::Features::TIMESTAMP_QUERY) && f.contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS),
        period_ns: attn.queue().get_timestamp_period() as f64,
    };
    let info = &caps.adapter;
    println!("adapter: {} ({:?}), timing: {}", info.name, info.backend, if timer.timestamps { "timestamps" } else { "wall clock" });
    let (batches, lens, heads, kv_heads, head_dim, copy_size): (&[u32], &[u32], u32, u32, u32, u64) = if args.quick {
        (&[1, 2], &[64, 500], 32, 8, 128, 16 << 20)
    } else {
        (&[1, 8, 32], &[4096, 32768, 131072], 32, 8, 128, 1 << 30)
    };
    let copy = copy_bandwidth(&attn, &timer, args.iters, copy_size.min(attn.device().limits().max_buffer_size));
    let copy_gbps = copy.as_ref().map(|(size, t)| 2.0 * *size as f64 / (median(t) * 1e-3) / 1e9);
    if let Some(g) = copy_gbps {
        println!("buffer copy: {g:.0} GB/s (read + write)");
    }
    println!(
        "{:>3} {:>7} {:>5} {:>10} {:>10} {:>11} {:>9} {:>7}  plan",
        "B", "L", "lanes", "median ms", "min ms", "K+V MB", "GB/s", "of copy"
    );
    let mut rows = Vec::new();
    for &b in batches {
        for &len in lens {
            for &lanes in &args.lanes {
                let r = measure(&attn, &dec, &timer, args.iters, dtype, (b, heads, kv_heads, head_dim, len), lanes);
                let (med, best) = (median(&r.times_ms), min(&r.times_ms));
                let gbps = r.kv_bytes / (med * 1e-3) / 1e9;
                let lanes_s = lanes.map_or("auto".to_string(), |l| l.to_string());
                match &r.error {
                    Some(e) => println!("{b:>3} {len:>7} {lanes_s:>5}  error: {e}"),
                    None => println!(
                        "{b:>3} {len:>7} {lanes_s:>5} {med:>10.4} {best:>10.4} {:>11.1} {gbps:>9.1} {:>6.0}%  {}",
                        r.kv_bytes / 1e6,
                        copy_gbps.map_or(f64::NAN, |c| 100.0 * gbps / c),
                        r.plan.map_or(String::new(), |p| format!(
                            "{:?} lanes {} cols {} rows {} splits {} row blocks {} caches {}",
                            p.variant.path, p.variant.lanes, p.variant.cols, p.variant.rows, p.splits, p.row_blocks, r.caches
                        ))
                    ),
                }
                rows.push(r);
            }
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(path, to_json(info, dtype, timer.timestamps, args.iters, &copy, &rows))?;
        println!("wrote {path}");
    }
    Ok(())
}

fn num(x: f64) -> String {
    if x.is_finite() { format!("{x}") } else { "null".into() }
}

fn to_json(info: &wgpu::AdapterInfo, dtype: Dtype, timestamps: bool, iters: u32, copy: &Option<(u64, Vec<f64>)>, rows: &[Row]) -> String {
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let list = |v: &[f64]| v.iter().map(|x| num(*x)).collect::<Vec<_>>().join(", ");
    let mut s = String::new();
    let _ = write!(
        s,
        "{{\n  \"bench\": \"sbattn decode\",\n  \"adapter\": \"{}\",\n  \"backend\": \"{:?}\",\n  \"dtype\": \"{dtype:?}\",\n  \"timing\": \"{}\",\n  \"iters\": {iters},\n",
        esc(&info.name),
        info.backend,
        if timestamps { "gpu timestamps per step" } else { "wall clock per batch of steps / steps" }
    );
    match copy {
        Some((size, t)) => {
            let _ = writeln!(
                s,
                "  \"copy\": {{\"bytes\": {size}, \"median_ms\": {}, \"min_ms\": {}, \"gbps_read_plus_write\": {}}},",
                num(median(t)),
                num(min(t)),
                num(2.0 * *size as f64 / (median(t) * 1e-3) / 1e9)
            );
        }
        None => s.push_str("  \"copy\": null,\n"),
    }
    s.push_str("  \"results\": [\n");
    for (i, r) in rows.iter().enumerate() {
        let (med, best) = (median(&r.times_ms), min(&r.times_ms));
        let plan = r.plan.map_or("null".into(), |p| {
            format!(
                "{{\"path\": \"{:?}\", \"vec_loads\": {}, \"lanes\": {}, \"cols\": {}, \"rows\": {}, \"splits\": {}, \"row_blocks\": {}}}",
                p.variant.path, p.variant.vec_loads, p.variant.lanes, p.variant.cols, p.variant.rows, p.splits, p.row_blocks
            )
        });
        let _ = writeln!(
            s,
            "    {{\"batch\": {}, \"heads\": {}, \"kv_heads\": {}, \"head_dim\": {}, \"cache_len\": {}, \"new_tokens\": 1, \
             \"lanes_forced\": {}, \"caches\": {}, \"plan\": {plan}, \"kv_bytes\": {}, \"median_ms\": {}, \"min_ms\": {}, \
             \"gbps_median\": {}, \"gbps_best\": {}, \"times_ms\": [{}], \"error\": {}}}{}",
            r.batch,
            r.heads,
            r.kv_heads,
            r.head_dim,
            r.cache_len,
            r.lanes.map_or("null".into(), |l| l.to_string()),
            r.caches,
            num(r.kv_bytes),
            num(med),
            num(best),
            num(r.kv_bytes / (med * 1e-3) / 1e9),
            num(r.kv_bytes / (best * 1e-3) / 1e9),
            list(&r.times_ms),
            r.error.as_ref().map_or("null".into(), |e| format!("\"{}\"", esc(e))),
            if i + 1 < rows.len() { "," } else { "" }
        );
    }
    s.push_str("  ]\n}\n");
    s
}
