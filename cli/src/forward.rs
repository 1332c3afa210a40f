//! `sbattn bench forward`: the forward kernel over shapes, dtypes, paths, cooperative-matrix
//! tiles, early-exit thresholds, input kinds and runtime-check settings; a markdown table on
//! stdout, `--json`, `--plot`.
//!
//! # Timing
//! [`crate::timer`]: each sample is `batch` forward calls (one compute pass each, all writing
//! the same output, so they run one after the other as in a model), timed by GPU timestamps or
//! submit-to-completion; calls rotate through `--sets` input sets. Pipelines are compiled before
//! any timing (the `compile s` of the JSON). [`crate::stats`] summarises the samples; TFLOP/s is
//! `Shape::forward_flops() / median`.
//!
//! # Inputs
//! Never zeros, never one tiny input: `--sets` independent sets of `q`, `k`, `v` per shape.
//! Element `i` of each tensor is `Rng::normal_at(stream, i)` (`sbattn::reference::Rng`,
//! counter-based), so large inputs are generated on every core.
//! - `random`: `q`, `k`, `v` ~ N(0, 1). With the default scale `1/sqrt(D)` the logits are
//!   ~N(0, 1): each key takes `softplus(z)` ~ 0.8 nats of stick on average, so the stick is
//!   spent after a few dozen keys (early exit helps most here).
//! - `long-range`: per kv head a fixed sign vector `u` in {-1, +1}^D; `q = a u + s n_q`,
//!   `k = -a u + s n_k` with `n ~ N(0, 1)`, `s = 0.5`, `a = sqrt(8 / sqrt(D))`; `v` ~ N(0, 1). The
//!   logits are then ~N(-8, ~0.7^2): every key takes only ~4e-4 nats of stick, so about a sixth
//!   of the stick is left at key 0 at T = 4096 and early exit with eps <= 1e-2 never triggers:
//!   the honest case for it.
//!
//! # Correctness
//! For each (D, group, dtype, path, tiles, eps, inputs, checks) a small problem (B1, two kv
//! heads, T = `--check-t`, the same generator, f16 inputs rounded for the reference) runs
//! through the very call that is timed (with `rem` returned) and is compared with
//! `sbattn::reference::forward` under [`crate::check::Bound`]. A failed check is reported in the
//! table and makes the exit status non-zero after the sweep.

use std::collections::HashMap;
use std::time::Instant;

use sbattn::ops::forward::plan;
use sbattn::reference::{self, Rng};
use sbattn::{
    Attention, BufferRef, Dtype, Forward, ForwardTuning, ForwardVariant, HostInput, HostRemainder,
    KernelPath, Remainder, ShaderChecks, Shape, TensorRef,
};
use serde::Serialize;

use crate::args::{ForwardArgs, Inputs, expand_paths};
use crate::check::{Bound, Verdict, compare, max_abs};
use crate::gpu::{
    ErrorSlot, checks_name, context, dtype_name, path_name, read_back, try_alloc, wait,
};
use crate::plot::{self, BaselineKind, Item, PlotSpec};
use crate::report::{
    AdapterJson, Align, Progress, ShapeJson, Skip, Table, command_line, fmt_err, fmt_ms, fmt_sig,
    save_json, shape_name, utc_now,
};
use crate::stats::{Summary, summarize};
use crate::timer::{Timer, Timing};
use crate::{Outcome, Result};

/// Mean logit of the `long-range` inputs (at the default scale).
const LONG_RANGE_MEAN_LOGIT: f32 = -8.0;
/// Noise of `q` and `k` around `±a u` in the `long-range` inputs.
const LONG_RANGE_NOISE: f32 = 0.5;
/// Elements generated and uploaded per step, to bound host and staging memory.
const UPLOAD_CHUNK: u64 = 1 << 24;

/// Which input tensor a value belongs to (part of its stream).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tensor {
    Q = 0,
    K = 1,
    V = 2,
}

/// Element `i` (layout `[B, T, heads, D]`) of an input tensor.
#[derive(Clone, Copy, Debug)]
struct Generator {
    inputs: Inputs,
    seed: u64,
    heads: u64,
    group: u64,
    head_dim: u64,
}

impl Generator {
    fn new(inputs: Inputs, seed: u64, shape: &Shape) -> Self {
        Generator {
            inputs,
            seed,
            heads: shape.heads() as u64,
            group: shape.group() as u64,
            head_dim: shape.head_dim() as u64,
        }
    }

    /// The stream of `tensor` in input set `set` (15: the long-range sign vectors).
    fn stream(&self, tensor: u64, set: u32) -> u64 {
        self.seed.wrapping_mul(1 << 16) ^ ((set as u64) << 4) ^ tensor
    }

    fn value(&self, tensor: Tensor, set: u32, idx: u64) -> f32 {
        let n = Rng::normal_at(self.stream(tensor as u64, set), idx);
        match (self.inputs, tensor) {
            (Inputs::Random, _) | (Inputs::LongRange, Tensor::V) => n,
            (Inputs::LongRange, _) => {
                let d = idx % self.head_dim;
                // One sign vector per kv head, shared by its query heads, every set, batch entry
                // and token.
                let (heads, per_kv) = if tensor == Tensor::Q {
                    (self.heads, self.group)
                } else {
                    (self.heads / self.group, 1)
                };
                let kv_head = (idx / self.head_dim) % heads / per_kv;
                let u = if Rng::normal_at(self.stream(15, 0), kv_head * self.head_dim + d) >= 0.0 {
                    1.0
                } else {
                    -1.0
                };
                let a = (-LONG_RANGE_MEAN_LOGIT / (self.head_dim as f32).sqrt()).sqrt();
                let sign = if tensor == Tensor::Q { 1.0 } else { -1.0 };
                sign * a * u + LONG_RANGE_NOISE * n
            }
        }
    }

    /// Elements `start..start + len`, generated on every core.
    fn chunk(&self, tensor: Tensor, set: u32, start: u64, len: usize) -> Vec<f32> {
        let mut out = vec![0f32; len];
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per = len.div_ceil(threads).max(4096);
        std::thread::scope(|s| {
            for (c, part) in out.chunks_mut(per).enumerate() {
                let first = start + (c * per) as u64;
                s.spawn(move || {
                    for (i, x) in part.iter_mut().enumerate() {
                        *x = self.value(tensor, set, first + i as u64);
                    }
                });
            }
        });
        out
    }
}

/// Elements of `q` (or `o`) and of each of `k`, `v`.
fn elems(s: &Shape) -> (u64, u64) {
    let tokens = s.batch() as u64 * s.seq_len() as u64 * s.head_dim() as u64;
    (tokens * s.heads() as u64, tokens * s.kv_heads() as u64)
}

/// The device buffers of one shape: input sets, the output and `rem`, sized for the widest
/// dtype measured and reused across inputs, dtypes, paths and thresholds.
struct Buffers {
    sets: Vec<[wgpu::Buffer; 3]>,
    o: wgpu::Buffer,
    rem: wgpu::Buffer,
}

impl Buffers {
    fn destroy(&self) {
        self.sets
            .iter()
            .flatten()
            .chain([&self.o, &self.rem])
            .for_each(wgpu::Buffer::destroy);
    }
}

fn allocate(attn: &Attention, shape: &Shape, elem_bytes: u64, sets: u32) -> Result<Buffers> {
    let dev = attn.device();
    let (nq, nkv) = elems(shape);
    let (q_bytes, kv_bytes) = (
        (nq * elem_bytes).next_multiple_of(4),
        (nkv * elem_bytes).next_multiple_of(4),
    );
    let l = dev.limits();
    let most = l.max_buffer_size.min(l.max_storage_buffer_binding_size);
    if q_bytes.max(kv_bytes) > most {
        return Err(format!(
            "a tensor needs {} bytes; the device binds at most {most}",
            q_bytes.max(kv_bytes)
        ));
    }
    use wgpu::BufferUsages as U;
    let make = |label: &str, size: u64, usage: U| {
        dev.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: U::STORAGE | usage,
            mapped_at_creation: false,
        })
    };
    try_alloc(dev, || Buffers {
        sets: (0..sets)
            .map(|_| {
                [
                    make("q", q_bytes, U::COPY_DST),
                    make("k", kv_bytes, U::COPY_DST),
                    make("v", kv_bytes, U::COPY_DST),
                ]
            })
            .collect(),
        o: make("o", q_bytes, U::COPY_SRC),
        rem: make("rem", (shape.rows() * 4).max(4), U::COPY_SRC),
    })
}

/// Writes the inputs of `g` in `dtype` into every set of `bufs`, in chunks.
fn fill(
    attn: &Attention,
    bufs: &Buffers,
    shape: &Shape,
    g: &Generator,
    dtype: Dtype,
) -> Result<()> {
    let (nq, nkv) = elems(shape);
    let es = dtype.size();
    for (set, tensors) in bufs.sets.iter().enumerate() {
        for ((buf, which), n) in tensors
            .iter()
            .zip([Tensor::Q, Tensor::K, Tensor::V])
            .zip([nq, nkv, nkv])
        {
            let mut start = 0;
            while start < n {
                let len = UPLOAD_CHUNK.min(n - start);
                let mut bytes =
                    sbattn::to_bytes(&g.chunk(which, set as u32, start, len as usize), dtype);
                bytes.resize(bytes.len().next_multiple_of(4), 0);
                attn.queue().write_buffer(buf, start * es, &bytes);
                attn.queue().submit([]);
                wait(attn)?;
                start += len;
            }
        }
    }
    Ok(())
}

/// One configuration to time.
#[derive(Clone, Copy, Debug)]
struct Config {
    shape: Shape,
    dtype: Dtype,
    /// The path asked for (`Auto` included).
    path: KernelPath,
    /// What runs.
    variant: ForwardVariant,
    tuning: ForwardTuning,
    eps: f32,
    inputs: Inputs,
}

impl Config {
    /// `auto→subgroup`, `coop`, `coop bn32`.
    fn path_label(&self) -> String {
        let chosen = path_name(self.variant.path);
        let mut s = if self.path == KernelPath::Auto {
            format!("auto→{chosen}")
        } else {
            chosen.to_string()
        };
        let tuning = self.tuning.label();
        if !tuning.is_empty() {
            s.push(' ');
            s.push_str(&tuning);
        }
        s
    }
}

/// Records call `i` of `c`: input set `i mod sets`; `rem` returned when asked (the check).
fn record(
    attn: &Attention,
    enc: &mut wgpu::CommandEncoder,
    c: &Config,
    bufs: &Buffers,
    i: usize,
    rem: bool,
) -> Result<()> {
    let [q, k, v] = &bufs.sets[i % bufs.sets.len()];
    let mut call = Forward::new(
        c.shape,
        c.dtype,
        TensorRef::bthd(q),
        TensorRef::bthd(k),
        TensorRef::bthd(v),
        TensorRef::bthd(&bufs.o),
    )
    .with_path(c.path)
    .with_early_exit(c.eps)
    .with_tuning(c.tuning);
    if rem {
        call = call.with_remainder(Remainder::Return(BufferRef::new(&bufs.rem)));
    }
    attn.forward(enc, &call).map_err(|e| e.to_string())
}

/// The correctness check of `c`: see the module documentation.
fn check(attn: &Attention, c: &Config, check_t: u32, seed: u64) -> Result<(Shape, Verdict)> {
    let group = c.shape.group();
    let shape = Shape::new()
        .with_seq_len(check_t)
        .with_heads(2 * group)
        .with_kv_heads(2)
        .with_head_dim(c.shape.head_dim());
    let g = Generator::new(c.inputs, seed ^ 0x5eed, &shape);
    let bufs = allocate(attn, &shape, c.dtype.size(), 1)?;
    let small = Config { shape, ..*c };
    let result = (|| {
        fill(attn, &bufs, &shape, &g, c.dtype)?;
        let mut enc = attn.device().create_command_encoder(&Default::default());
        record(attn, &mut enc, &small, &bufs, 0, true)?;
        attn.queue().submit([enc.finish()]);
        let (nq, nkv) = elems(&shape);
        let o = read_back(attn, &bufs.o, nq * c.dtype.size(), c.dtype)?;
        let rem = read_back(attn, &bufs.rem, shape.rows() * 4, Dtype::F32)?;
        let host = |t, n| sbattn::round_to(&g.chunk(t, 0, 0, n as usize), c.dtype);
        let (q, k, v) = (
            host(Tensor::Q, nq),
            host(Tensor::K, nkv),
            host(Tensor::V, nkv),
        );
        let want = reference::forward(
            &HostInput::new(shape, &q, &k, &v).with_remainder(HostRemainder::Return),
        )
        .map_err(|e| format!("reference: {e}"))?;
        let bound = Bound::forward_o(c.dtype, c.variant.path, check_t, max_abs(&v), c.eps);
        Ok(compare(&o, &want.o, &bound).merge(compare(&rem, &want.rem, &Bound::rows(c.eps))))
    })();
    bufs.destroy();
    result.map(|v| (shape, v))
}

/// The check of a result in the JSON.
#[derive(Clone, Debug, Serialize)]
struct CheckJson {
    shape: Option<ShapeJson>,
    #[serde(flatten)]
    verdict: Option<Verdict>,
    error: Option<String>,
}

/// One measured configuration in the JSON (scripts/report.py reads these fields).
#[derive(Clone, Debug, Serialize)]
struct ForwardResult {
    shape: ShapeJson,
    dtype: &'static str,
    path_requested: &'static str,
    path: &'static str,
    variant: String,
    coop_block_n: Option<u32>,
    /// ForwardTuning::label of what was set ("" for the defaults).
    tuning: String,
    eps: f32,
    inputs: &'static str,
    checks: &'static str,
    timer: &'static str,
    batch: u32,
    iters: usize,
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
    p10_ms: f64,
    p90_ms: f64,
    spread: f64,
    samples_ms: Vec<f64>,
    flops: f64,
    tflops_median: f64,
    tflops_best: f64,
    check: Option<CheckJson>,
    compile_s: f64,
}

/// The JSON file of a run.
#[derive(Clone, Debug, Serialize)]
struct ForwardDoc {
    tool: &'static str,
    format: u32,
    date: String,
    command: String,
    profile: String,
    adapter: Option<AdapterJson>,
    timer: String,
    settings: Settings,
    complete: bool,
    results: Vec<ForwardResult>,
    skipped: Vec<Skip>,
}

/// The sampling settings in the JSON.
#[derive(Clone, Debug, Serialize)]
struct Settings {
    iters: u32,
    warmup: u32,
    batch: u32,
    sample_ms: f64,
    time_limit_s: f64,
    sets: u32,
    check_t: u32,
    seed: u64,
    statistics: &'static str,
}

/// The statistics line of the JSON and the output.
pub const STATISTICS: &str =
    "median and min of the per-call samples; spread = (p90 - p10) / median";

const COLUMNS: &[(&str, Align)] = &[
    ("shape BxHxTxD", Align::Left),
    ("dtype", Align::Left),
    ("path", Align::Left),
    ("eps", Align::Right),
    ("inputs", Align::Left),
    ("checks", Align::Left),
    ("median ms", Align::Right),
    ("min ms", Align::Right),
    ("spread", Align::Right),
    ("TFLOP/s", Align::Right),
    ("max err", Align::Right),
    ("tol", Align::Right),
    ("timer", Align::Left),
];

/// One kernel to run at a shape: dtype, requested path, the variant that runs, its tuning.
type Run = (Dtype, KernelPath, ForwardVariant, ForwardTuning);

/// What a check depends on: head dim, group, dtype, path, tuning, eps bits, inputs.
type CheckKey = (u32, u32, Dtype, KernelPath, ForwardTuning, u32, Inputs);

/// What runs at one shape, and what cannot (why).
fn runnable(attn: &Attention, a: &ForwardArgs, shape: &Shape) -> (Vec<Run>, Vec<Skip>) {
    let d = shape.head_dim();
    let (mut out, mut skipped) = (Vec::new(), Vec::new());
    let mut dtypes: Vec<Dtype> = a.dtypes.iter().map(|x| x.dtype()).collect();
    dtypes.dedup();
    for dtype in dtypes {
        for path in expand_paths(&a.paths, true) {
            let what = format!("{} {} D{d}", dtype_name(dtype), path_name(path));
            match attn.forward_variant(dtype, d, path) {
                Err(e) => skipped.push(Skip {
                    what,
                    reason: e.to_string(),
                }),
                Ok(v) => {
                    // The coop-only parts of a tuning apply to the coop path alone: the portable
                    // paths take each distinct remainder once.
                    let mut tunings: Vec<ForwardTuning> = Vec::new();
                    for base in &a.tuning {
                        for n in &a.coop_block_n {
                            let mut t = *base;
                            if let Some(n) = n.get() {
                                t = t.with_coop_block_n(n);
                            }
                            if !v.path.is_cooperative() {
                                t = ForwardTuning::default().with_heads_inner_opt(t.heads_inner);
                            }
                            if !tunings.contains(&t) {
                                tunings.push(t);
                            }
                        }
                    }
                    for tuning in tunings {
                        match plan::choose(attn.capabilities(), dtype, d, path, true, &tuning) {
                            Ok(v) => out.push((dtype, path, v, tuning)),
                            Err(e) => skipped.push(Skip {
                                what: format!("{what} tuning {}", tuning.label()),
                                reason: e.to_string(),
                            }),
                        }
                    }
                }
            }
        }
    }
    (out, skipped)
}

/// Runs `sbattn bench forward`.
///
/// # Errors
/// No adapter, a timer the device lacks, writing the JSON or the plot.
pub fn run(a: &ForwardArgs) -> Result<Outcome> {
    let shapes = a.shapes();
    let sampling = a.bench.sampling();
    let mut doc = ForwardDoc {
        tool: "sbattn bench forward",
        format: 2,
        date: utc_now(),
        command: command_line(),
        profile: format!("{:?}", a.bench.profile).to_lowercase(),
        adapter: None,
        timer: String::new(),
        settings: Settings {
            iters: sampling.iters,
            warmup: sampling.warmup,
            batch: sampling.batch,
            sample_ms: sampling.sample_ms,
            time_limit_s: sampling.time_limit_s,
            sets: a.sets,
            check_t: a.check_t,
            seed: a.bench.seed,
            statistics: STATISTICS,
        },
        complete: false,
        results: Vec::new(),
        skipped: Vec::new(),
    };
    let table = Table::new(COLUMNS).with_widths(&[14, 5, 13, 5, 10, 9, 9, 9, 6, 8, 7, 7, 14]);
    let contexts = a.bench.checks();
    let mut failed = 0usize;
    let mut progress: Option<Progress> = None;
    for (ci, &checks) in contexts.iter().enumerate() {
        let attn = context(checks)?;
        let errors = ErrorSlot::install(&attn);
        let timer = Timer::new(&attn, a.bench.timer)?;
        let plans: Vec<_> = shapes.iter().map(|s| runnable(&attn, a, s)).collect();
        if ci == 0 {
            let adapter = AdapterJson::of(&attn);
            println!("{}", adapter.line(&timer.describe()));
            println!("statistics: {STATISTICS}; TFLOP/s = 4 B H (T^2/2) D / median\n");
            // What cannot run, before the table (stderr), each said once.
            for s in plans.iter().flat_map(|(_, skipped)| skipped) {
                if !doc.skipped.iter().any(|x| x.what == s.what) {
                    eprintln!("skip {}: {}", s.what, s.reason);
                    doc.skipped.push(s.clone());
                }
            }
            println!("{}", table.header());
            doc.adapter = Some(adapter);
            doc.timer = timer.name().into();
            let per_context: usize = plans
                .iter()
                .map(|(r, _)| r.len() * a.inputs.len() * a.eps.len())
                .sum();
            progress = Some(Progress::new((per_context * contexts.len()) as u64));
        }
        let progress = progress.as_ref().expect("made with the first context");
        let mut checked: HashMap<CheckKey, Result<(Shape, Verdict)>> = HashMap::new();
        for (shape, (runs, _)) in shapes.iter().zip(plans) {
            let Some(widest) = runs.iter().map(|r| r.0.size()).max() else {
                continue;
            };
            let bufs = match allocate(&attn, shape, widest, a.sets) {
                Ok(b) => b,
                Err(e) => {
                    let what = format!("{} (all)", shape_name(shape));
                    progress.note(&format!("skip {what}: {e}"));
                    doc.skipped.push(Skip { what, reason: e });
                    (0..runs.len() * a.inputs.len() * a.eps.len()).for_each(|_| progress.inc());
                    continue;
                }
            };
            for &inputs in &a.inputs {
                let mut filled: Option<Dtype> = None;
                for &(dtype, path, variant, tuning) in &runs {
                    if filled != Some(dtype) {
                        progress.set_message(format!(
                            "{} {} {} inputs",
                            shape_name(shape),
                            dtype_name(dtype),
                            inputs.name()
                        ));
                        if let Err(e) = errors.check(fill(
                            &attn,
                            &bufs,
                            shape,
                            &Generator::new(inputs, a.bench.seed, shape),
                            dtype,
                        )) {
                            let what = format!(
                                "{} {} {} inputs",
                                shape_name(shape),
                                dtype_name(dtype),
                                inputs.name()
                            );
                            progress.note(&format!("skip {what}: {e}"));
                            doc.skipped.push(Skip { what, reason: e });
                            a.eps.iter().for_each(|_| progress.inc());
                            continue;
                        }
                        filled = Some(dtype);
                    }
                    let mut compile_s = None;
                    for &eps in &a.eps {
                        let c = Config {
                            shape: *shape,
                            dtype,
                            path,
                            variant,
                            tuning,
                            eps,
                            inputs,
                        };
                        progress.set_message(format!(
                            "{} {} {} eps {eps}",
                            shape_name(shape),
                            dtype_name(dtype),
                            c.path_label()
                        ));
                        if compile_s.is_none() {
                            compile_s = Some(errors.check(compile(&attn, &c, &bufs)));
                        }
                        let what = format!(
                            "{} {} {} eps {eps} {} {}",
                            shape_name(shape),
                            dtype_name(dtype),
                            c.path_label(),
                            inputs.name(),
                            checks_name(checks)
                        );
                        let compiled = match compile_s.clone().expect("set above") {
                            Ok(s) => s,
                            Err(e) => {
                                progress.note(&format!("skip {what}: {e}"));
                                doc.skipped.push(Skip { what, reason: e });
                                progress.inc();
                                continue;
                            }
                        };
                        let check = (a.check_t > 0).then(|| {
                            let key = (
                                shape.head_dim(),
                                shape.group(),
                                dtype,
                                path,
                                tuning,
                                eps.to_bits(),
                                inputs,
                            );
                            checked
                                .entry(key)
                                .or_insert_with(|| {
                                    errors.check(check(&attn, &c, a.check_t, a.bench.seed))
                                })
                                .clone()
                        });
                        let mut rec = |enc: &mut wgpu::CommandEncoder, i: usize| {
                            record(&attn, enc, &c, &bufs, i, false)
                        };
                        let timing = match errors.check(timer.measure(&attn, &sampling, &mut rec)) {
                            Ok(t) => t,
                            Err(e) => {
                                progress.note(&format!("skip {what}: {e}"));
                                doc.skipped.push(Skip { what, reason: e });
                                progress.inc();
                                continue;
                            }
                        };
                        let row = result(&c, checks, &timing, check, compiled);
                        if row
                            .check
                            .as_ref()
                            .is_some_and(|k| k.verdict.is_none_or(|v| !v.pass))
                        {
                            failed += 1;
                        }
                        progress.println(&table.row(&cells(&c, checks, &row)));
                        if let Some(e) = row.check.as_ref().and_then(|k| k.error.as_ref()) {
                            progress.note(&format!("  check failed: {e}"));
                        }
                        doc.results.push(row);
                        if let Some(p) = &a.bench.json {
                            save_json(p, &doc)?;
                        }
                        compile_s = Some(Ok(0.0));
                        progress.inc();
                    }
                }
            }
            bufs.destroy();
            wait(&attn)?;
        }
    }
    if let Some(p) = progress {
        p.finish();
    }
    doc.complete = true;
    if let Some(p) = &a.bench.json {
        save_json(p, &doc)?;
        eprintln!("wrote {}", p.display());
    }
    if let Some(p) = &a.bench.plot {
        draw(a, &doc, p)?;
        eprintln!("wrote {}", p.display());
    }
    Ok(Outcome::of_checks(failed))
}

/// Compiles `c`'s pipeline (recording one call and running it): seconds it took when it
/// compiled something, else 0.
fn compile(attn: &Attention, c: &Config, bufs: &Buffers) -> Result<f64> {
    let before = attn.compiled_kernels();
    let t0 = Instant::now();
    let mut enc = attn.device().create_command_encoder(&Default::default());
    record(attn, &mut enc, c, bufs, 0, false)?;
    let s = t0.elapsed().as_secs_f64();
    attn.queue().submit([enc.finish()]);
    wait(attn)?;
    Ok(if attn.compiled_kernels() > before {
        s
    } else {
        0.0
    })
}

/// The JSON of one measurement.
fn result(
    c: &Config,
    checks: ShaderChecks,
    t: &Timing,
    check: Option<Result<(Shape, Verdict)>>,
    compile_s: f64,
) -> ForwardResult {
    let s = summarize(&t.samples).unwrap_or(Summary {
        n: 0,
        median: f64::NAN,
        min: f64::NAN,
        max: f64::NAN,
        p10: f64::NAN,
        p90: f64::NAN,
        spread: f64::NAN,
    });
    let ms = s.scaled(1e3);
    let flops = c.shape.forward_flops();
    ForwardResult {
        shape: ShapeJson::of(&c.shape),
        dtype: dtype_name(c.dtype),
        path_requested: path_name(c.path),
        path: path_name(c.variant.path),
        variant: format!("{:?}", c.variant),
        coop_block_n: c.tuning.coop_block_n,
        tuning: c.tuning.label(),
        eps: c.eps,
        inputs: c.inputs.name(),
        checks: checks_name(checks),
        timer: t.timer,
        batch: t.batch,
        iters: s.n,
        median_ms: ms.median,
        min_ms: ms.min,
        max_ms: ms.max,
        p10_ms: ms.p10,
        p90_ms: ms.p90,
        spread: s.spread,
        samples_ms: t.samples.iter().map(|x| x * 1e3).collect(),
        flops,
        tflops_median: flops / s.median * 1e-12,
        tflops_best: flops / s.min * 1e-12,
        check: check.map(|r| match r {
            Ok((shape, v)) => CheckJson {
                shape: Some(ShapeJson::of(&shape)),
                verdict: Some(v),
                error: None,
            },
            Err(e) => CheckJson {
                shape: None,
                verdict: None,
                error: Some(e),
            },
        }),
        compile_s,
    }
}

/// The table row of one measurement.
fn cells(c: &Config, checks: ShaderChecks, r: &ForwardResult) -> Vec<String> {
    let (err, tol) = match &r.check {
        None => ("-".into(), "-".into()),
        Some(CheckJson {
            verdict: Some(v), ..
        }) => (
            if v.pass {
                fmt_err(v.err)
            } else {
                format!("FAIL {}", fmt_err(v.err))
            },
            fmt_err(v.tol),
        ),
        Some(_) => ("ERROR".into(), "-".into()),
    };
    vec![
        shape_name(&c.shape),
        dtype_name(c.dtype).into(),
        c.path_label(),
        format!("{}", c.eps),
        c.inputs.name().into(),
        checks_name(checks).into(),
        fmt_ms(r.median_ms),
        fmt_ms(r.min_ms),
        format!("{:.1}%", 100.0 * r.spread),
        fmt_sig(r.tflops_median, 3),
        err,
        tol,
        format!("{} {}x{}", r.timer, r.batch, r.iters),
    ]
}

/// `--plot`: time and TFLOP/s against T, a series per configuration and per baseline.
fn draw(a: &ForwardArgs, doc: &ForwardDoc, path: &std::path::Path) -> Result<()> {
    let items: Vec<Item> = doc
        .results
        .iter()
        .map(|r| {
            let mut path = if r.path_requested == "auto" {
                format!("auto→{}", r.path)
            } else {
                r.path.to_string()
            };
            if !r.tuning.is_empty() {
                path.push(' ');
                path.push_str(&r.tuning);
            }
            Item {
                dims: vec![
                    path,
                    r.dtype.to_string(),
                    format!("eps {}", r.eps),
                    r.inputs.to_string(),
                    format!("checks {}", r.checks),
                ],
                family: (
                    r.shape.batch,
                    r.shape.heads,
                    r.shape.kv_heads,
                    r.shape.head_dim,
                ),
                x: r.shape.seq_len as f64,
                ms: r.median_ms,
                rate: r.tflops_median,
                preferred: r.tuning.is_empty()
                    && r.eps == 0.0
                    && r.inputs == "random"
                    && r.checks == "default",
            }
        })
        .collect();
    let baselines = match &a.bench.baselines {
        Some(p) => plot::read_baselines(p, BaselineKind::Forward)?,
        None => Vec::new(),
    };
    let adapter = doc
        .adapter
        .as_ref()
        .map_or(String::new(), |x| x.name.clone());
    let spec = PlotSpec {
        title: format!("sbattn forward on {adapter} ({} timer, median)", doc.timer),
        x_label: "sequence length T".into(),
        rate_label: "TFLOP/s".into(),
    };
    plot::draw(
        path,
        &spec,
        &plot::series(&items, &baselines, BaselineKind::Forward),
    )
}
