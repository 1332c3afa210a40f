//! `coop-probe`: what wgpu's cooperative matrices reach on this adapter, for an f16 x f16 -> f32
//! matrix product of `--size` (default 4096) in three ways (tools/src/coop_probe.wgsl: operands
//! straight from global memory; tiles staged in workgroup memory by cooperative copies with the
//! next step's loads in flight; tiles staged by plain 8-byte loads), each compiled with wgpu's
//! index clamping and without it. Each is checked against an f64 product first (at 256).
//!
//! ```text
//! cargo run --release -p sbattn-tools -- [--size 4096] [--iters 20] [--json FILE]
//! ```

use std::time::Instant;

use wgpu::util::DeviceExt;

const SHADER: &str = include_str!("coop_probe.wgsl");

struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    name: String,
}

fn gpu() -> Result<Gpu, String> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    let adapter = adapters
        .into_iter()
        .find(|a| a.features().contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX))
        .ok_or("no adapter with EXPERIMENTAL_COOPERATIVE_MATRIX")?;
    let wanted = wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP | wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
    let desc = wgpu::DeviceDescriptor {
        label: Some("coop probe"),
        required_features: adapter.features() & wanted,
        required_limits: adapter.limits(),
        // SAFETY: a probe of the experimental feature itself.
        experimental_features: unsafe { wgpu::ExperimentalFeatures::enabled() },
        ..Default::default()
    };
    let (device, queue) = pollster::block_on(adapter.request_device(&desc)).map_err(|e| e.to_string())?;
    let name = adapter.get_info().name;
    Ok(Gpu { device, queue, name })
}

/// Deterministic values in [-1, 1), rounded to f16.
fn values(n: usize, seed: u64) -> Vec<half::f16> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            half::f16::from_f32((x >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
        })
        .collect()
}

struct Problem {
    size: u32,
    a: Vec<half::f16>,
    b: Vec<half::f16>,
    bufs: [wgpu::Buffer; 4],
}

fn problem(g: &Gpu, size: u32) -> Problem {
    let n = (size * size) as usize;
    let (a, b) = (values(n, 1), values(n, 2));
    let up = |data: &[half::f16]| {
        g.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytemuck::cast_slice(data),
            usage: wgpu::BufferUsages::STORAGE,
        })
    };
    let dims = g.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: bytemuck::cast_slice(&[size, size, size, 0]),
        usage: wgpu::BufferUsages::UNIFORM,
    });
    let c = g.device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 4 * n as u64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let (ab, bb) = (up(&a), up(&b));
    Problem { size, a, b, bufs: [dims, ab, bb, c] }
}

fn pipeline(g: &Gpu, entry: &str, checked: bool) -> wgpu::ComputePipeline {
    let desc = wgpu::ShaderModuleDescriptor { label: Some(entry), source: wgpu::ShaderSource::Wgsl(SHADER.into()) };
    let checks = wgpu::ShaderRuntimeChecks { force_loop_bounding: false, ..if checked { wgpu::ShaderRuntimeChecks::checked() } else { wgpu::ShaderRuntimeChecks::unchecked() } };
    // SAFETY: every loop of the probe ends; unchecked variants index only inside their buffers
    // for sizes that are multiples of 128 (main checks that).
    let module = unsafe { g.device.create_shader_module_trusted(desc, checks) };
    g.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(entry),
        layout: None,
        module: &module,
        entry_point: Some(entry),
        compilation_options: Default::default(),
        cache: None,
    })
}

fn record(g: &Gpu, p: &Problem, pipe: &wgpu::ComputePipeline, entry: &str, enc: &mut wgpu::CommandEncoder) {
    let layout = pipe.get_bind_group_layout(0);
    let [dims, a, b, c] = &p.bufs;
    let mut entries = vec![
        wgpu::BindGroupEntry { binding: 0, resource: dims.as_entire_binding() },
        wgpu::BindGroupEntry { binding: 1, resource: a.as_entire_binding() },
        wgpu::BindGroupEntry { binding: 2, resource: b.as_entire_binding() },
        wgpu::BindGroupEntry { binding: 3, resource: c.as_entire_binding() },
    ];
    if entry == "vec" {
        entries.retain(|e| e.binding != 1 && e.binding != 2);
        entries.push(wgpu::BindGroupEntry { binding: 4, resource: a.as_entire_binding() });
        entries.push(wgpu::BindGroupEntry { binding: 5, resource: b.as_entire_binding() });
    }
    let group = g.device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &layout, entries: &entries });
    let tile = if entry == "naive" { 32 } else { 128 };
    let mut pass = enc.begin_compute_pass(&Default::default());
    pass.set_pipeline(pipe);
    pass.set_bind_group(0, &group, &[]);
    pass.dispatch_workgroups(p.size / tile, p.size / tile, 1);
}

/// Max |C - A B| / max |A B| of the probe's result against an f64 product.
fn check(g: &Gpu, p: &Problem, pipe: &wgpu::ComputePipeline, entry: &str) -> f64 {
    let n = p.size as usize;
    let mut enc = g.device.create_command_encoder(&Default::default());
    record(g, p, pipe, entry, &mut enc);
    let staging = g.device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 4 * (n * n) as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    enc.copy_buffer_to_buffer(&p.bufs[3], 0, &staging, 0, staging.size());
    g.queue.submit([enc.finish()]);
    staging.slice(..).map_async(wgpu::MapMode::Read, |_| {});
    g.device.poll(wgpu::PollType::wait_indefinitely()).expect("poll");
    let got: Vec<f32> = bytemuck::cast_slice(&staging.slice(..).get_mapped_range().expect("mapped")).to_vec();
    let (mut err, mut max) = (0.0f64, 0.0f64);
    for i in 0..n {
        for j in 0..n {
            let want: f64 = (0..n).map(|k| p.a[i * n + k].to_f64() * p.b[k * n + j].to_f64()).sum();
            err = err.max((got[i * n + j] as f64 - want).abs());
            max = max.max(want.abs());
        }
    }
    err / max
}

/// Best time of one dispatch over 3 batches of `iters` between two waits, in ms.
fn time(g: &Gpu, p: &Problem, pipe: &wgpu::ComputePipeline, entry: &str, iters: u32) -> f64 {
    let wait = || g.device.poll(wgpu::PollType::wait_indefinitely()).expect("poll");
    let mut best = f64::INFINITY;
    for _ in 0..4 {
        let mut enc = g.device.create_command_encoder(&Default::default());
        for _ in 0..iters {
            record(g, p, pipe, entry, &mut enc);
        }
        let cmd = enc.finish();
        wait();
        let t0 = Instant::now();
        g.queue.submit([cmd]);
        wait();
        best = best.min(t0.elapsed().as_secs_f64() * 1e3 / iters as f64);
    }
    best
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: &str| -> String {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_string())
    };
    let size: u32 = arg("--size", "4096").parse().map_err(|e| format!("--size: {e}"))?;
    let iters: u32 = arg("--iters", "20").parse().map_err(|e| format!("--iters: {e}"))?;
    if !size.is_multiple_of(128) {
        return Err("--size must be a multiple of 128".into());
    }
    let g = gpu()?;
    println!("adapter: {}", g.name);
    let small = problem(&g, 256);
    let big = problem(&g, size);
    let mut rows = Vec::new();
    println!("| kernel | checks | rel err (256) | ms ({size}^3) | TFLOP/s |\n|---|---|---|---|---|");
    for entry in ["naive", "staged", "vec"] {
        for checked in [true, false] {
            let pipe = pipeline(&g, entry, checked);
            let err = check(&g, &small, &pipe, entry);
            let ms = time(&g, &big, &pipe, entry, iters);
            let tflops = 2.0 * (size as f64).powi(3) / (ms * 1e-3) / 1e12;
            let checks = if checked { "index clamping" } else { "unchecked" };
            println!("| {entry} | {checks} | {err:.1e} | {ms:.3} | {tflops:.1} |");
            rows.push(format!(
                "{{\"kernel\":\"{entry}\",\"checks\":\"{checks}\",\"rel_err\":{err:e},\"ms\":{ms},\"tflops\":{tflops},\"size\":{size}}}"
            ));
        }
    }
    let json = arg("--json", "");
    if !json.is_empty() {
        std::fs::write(&json, format!("{{\"adapter\":\"{}\",\"results\":[{}]}}\n", g.name, rows.join(","))).map_err(|e| e.to_string())?;
    }
    Ok(())
}
