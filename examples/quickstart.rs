//! The main job: stick-breaking attention on the default adapter at a realistic shape,
//! checked against the f64 reference and timed.
//!
//! `cargo run --release --example quickstart [-- [--pipeline-cache FILE] B H T D]` (default
//! 1 8 1024 64). `--pipeline-cache FILE` creates the pipelines through a persistent pipeline
//! cache kept in FILE (read at start if it exists, written at the end), where the device has one
//! (Vulkan). The first call of each dtype compiles its kernel; its time is printed.

use std::time::Instant;

use sbattn::{reference, round_to, Attention, Dtype, HostInput, HostRemainder, KernelPath, Shape};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let cache = match args.iter().position(|a| a == "--pipeline-cache") {
        Some(i) => {
            let file = args.get(i + 1).cloned().ok_or("--pipeline-cache needs a file")?;
            args.drain(i..i + 2);
            Some(file)
        }
        None => None,
    };
    let args: Vec<u32> = args.iter().map(|a| a.parse()).collect::<Result<_, _>>()?;
    let [b, h, t, d] = match args.as_slice() {
        [] => [1, 8, 1024, 64],
        [b, h, t, d] => [*b, *h, *t, *d],
        _ => return Err("usage: quickstart [--pipeline-cache FILE] [B H T D]".into()),
    };
    let attn = Attention::with_default_adapter_blocking()?;
    let attn = match &cache {
        Some(file) => attn.with_pipeline_cache_file(file),
        None => attn,
    };
    let caps = attn.capabilities();
    println!("adapter: {} ({:?}, {})", caps.name, caps.backend, caps.driver);
    let shape = Shape::new().with_batch(b).with_seq_len(t).with_heads(h).with_head_dim(d);
    let dtype = if caps.f16() { Dtype::F16 } else { Dtype::F32 };

    // Deterministic pseudo-random inputs, rounded to what the GPU stores.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    let n = (b * t * h * d) as usize;
    let mut make = |dt| round_to(&(0..n).map(|_| next() * 1.7).collect::<Vec<_>>(), dt);
    let (q, k, v) = (make(dtype), make(dtype), make(dtype));

    for dtype in [Dtype::F32, dtype] {
        let plan = attn.forward_variant(dtype, d, KernelPath::Auto)?;
        println!("\n{dtype:?}: path {:?}, tiles {:?}", plan.path, plan.tiles);
        let input = HostInput::new(shape, &q, &k, &v).with_dtype(dtype).with_remainder(HostRemainder::Return);
        let first = Instant::now();
        attn.run_host_blocking(&input)?; // compiles the kernel (at pipeline creation or, on some drivers, its first dispatch)
        println!("  first call (kernel compile included): {:.2} s", first.elapsed().as_secs_f64());
        let start = Instant::now();
        let out = attn.run_host_blocking(&input)?;
        let elapsed = start.elapsed();
        let want = reference::forward(&input)?;
        let err_o = out.o.iter().zip(&want.o).map(|(g, w)| (*g as f64 - w).abs()).fold(0.0, f64::max);
        let rem = out.rem.as_deref().unwrap_or_default();
        let err_rem = rem.iter().zip(&want.rem).map(|(g, w)| (*g as f64 - w).abs()).fold(0.0, f64::max);
        println!("  B={b} H={h} T={t} D={d}: max |o - reference| = {err_o:.2e}, max |rem - reference| = {err_rem:.2e}");
        println!(
            "  time (upload + kernel + readback): {:.2} ms ({:.3} TFLOP/s effective)",
            elapsed.as_secs_f64() * 1e3,
            shape.forward_flops() / elapsed.as_secs_f64() / 1e12
        );
        let tol = if dtype == Dtype::F16 { 4e-3 } else { 1e-4 };
        if !(err_o <= tol && err_rem <= 1e-4) {
            return Err(format!("error above tolerance {tol:e}").into());
        }
    }
    if let Some(file) = &cache {
        attn.save_pipeline_cache(file)?;
        println!("\npipeline cache: {file} ({:?})", attn.pipeline_cache_status());
    }
    println!("\nok");
    Ok(())
}
