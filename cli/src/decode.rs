//! `sbattn bench decode`: one new token per sequence against a KV cache, all heads.
//!
//! For each batch size `B` and cache length `L` (default H32 over Hkv8, D128, f16 where the
//! device has it), times `Attention::decode` (split-K partials + merge) with the mask that lets
//! the query see every cached key (its own included), and reports the median and best time per
//! step, the bytes of K and V a step must read (`2 B Hkv L D` times the element size) and the
//! bandwidth that implies, against two ceilings measured in the same run: a WGSL read probe
//! (`cli/shaders/read_probe.wgsl`: 16-byte loads, four in flight, what a kernel can stream) and
//! wgpu's buffer copy; `--ref-gbps` adds a third given by hand (such as PyTorch's copy).
//!
//! Each shape runs the library's choice first, then every combination of `--paths`, `--lanes`,
//! `--vec`, `--keys` and `--splits` (`DecodeTuning`; `auto` leaves a choice to the library),
//! under each `--checks` setting; a summary compares the library's choice with the fastest.
//!
//! Timing: [`crate::timer`], one decode step per call. The caches hold uniform values in
//! [-1, 1) (`--zeros`: zeros; early exit is off, so timing does not depend on them). Steps
//! rotate over enough copies of the caches to pass `--rotate-mb`, as a model's layers do, so
//! small shapes are not timed out of the L2. A batch whose cache would exceed the largest
//! storage binding is split over several caches, decoded one after the other in the same step.
//!
//! Correctness: each configuration's tuning and path also decode a small case (two sequences or
//! one, a `--check-len` cache, the same heads, head dim and dtype) against the reference
//! ([`crate::check::run_decode_case`]).

use std::collections::HashMap;

use sbattn::reference::Rng;
use sbattn::{
    Attention, Decode, DecodePlan, DecodeTuning, Dtype, KernelPath, KvCache, KvCacheDesc, Layout,
    Load, Mask, TensorRef,
};
use serde::Serialize;
use wgpu::util::DeviceExt;

use crate::args::{Auto, DecodeArgs, VecLoad, expand_paths};
use crate::check::{DecodeCase, RemMode, Verdict, decode_plan_label, run_decode_case};
use crate::gpu::{ErrorSlot, checks_name, context, dtype_name, path_name, try_alloc, wait};
use crate::plot::{self, BaselineKind, Item, PlotSpec};
use crate::report::{
    AdapterJson, Align, Progress, Skip, Table, command_line, fmt_err, fmt_ms, fmt_pct, fmt_sig,
    save_json, utc_now,
};
use crate::stats::{Summary, summarize};
use crate::timer::{Sampling, Timer, Timing};
use crate::{Outcome, Result};

/// The read probe (not a library kernel).
pub const READ_PROBE_WGSL: &str = include_str!("../shaders/read_probe.wgsl");
/// Workgroups of the probe: 256 invocations each, many per multiprocessor on any GPU.
const PROBE_GRID: u32 = 4096;

/// One kernel configuration (`Auto`: the library's choice).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Config {
    path: KernelPath,
    lanes: Auto<u32>,
    vec: Auto<VecLoad>,
    keys: Auto<u32>,
    splits: Auto<u32>,
}

impl Config {
    const AUTO: Config = Config {
        path: KernelPath::Auto,
        lanes: Auto::Auto,
        vec: Auto::Auto,
        keys: Auto::Auto,
        splits: Auto::Auto,
    };

    /// The forced choices for a cache of `dtype`.
    fn tuning(&self, dtype: Dtype) -> Result<DecodeTuning> {
        let mut t = DecodeTuning::default();
        if let Some(l) = self.lanes.get() {
            t = t.with_lanes(l);
        }
        if let Some(k) = self.keys.get() {
            t = t.with_keys_per_step(k);
        }
        if let Some(s) = self.splits.get() {
            t = t.with_splits(s);
        }
        match self.vec.get() {
            None => {}
            Some(VecLoad::Scalar) => t = t.with_load(Load::Scalar),
            Some(VecLoad::Bytes(b)) => match b as u64 / dtype.size() {
                4 => t = t.with_load(Load::Vec4),
                8 => t = t.with_load(Load::Vec8),
                _ => return Err(format!("no {b}-byte loads of {}", dtype_name(dtype))),
            },
        }
        Ok(t)
    }
}

/// The caches of one shape: `copies` sets of caches (a batch split over several caches where
/// one binding cannot hold it), each sequence full to `len`; the query and output buffers.
struct ShapeSet {
    copies: Vec<Vec<KvCache>>,
    q: wgpu::Buffer,
    o: wgpu::Buffer,
}

impl ShapeSet {
    fn new(attn: &Attention, a: &DecodeArgs, dtype: Dtype, batch: u32, len: u32) -> Result<Self> {
        let dev = attn.device();
        let (heads, kv_heads, head_dim) = (a.heads, a.kv_heads, a.head_dim);
        let es = dtype.size();
        let l = dev.limits();
        // Sequences per cache: each of K and V must fit one binding with 32-bit element indices.
        let per_seq = kv_heads as u64 * len as u64 * head_dim as u64 * es;
        let max_bytes = l
            .max_storage_buffer_binding_size
            .min(l.max_buffer_size)
            .min(u32::MAX as u64 * es);
        let per_cache = (max_bytes / per_seq).min(batch as u64) as u32;
        if per_cache == 0 {
            return Err(format!(
                "one sequence needs {per_seq} bytes per cache tensor, over the {max_bytes}-byte limit"
            ));
        }
        let n_caches = batch.div_ceil(per_cache);
        let sizes: Vec<u32> = (0..n_caches)
            .map(|i| batch / n_caches + (i < batch % n_caches) as u32)
            .collect();
        let kv_bytes = 2 * batch as u64 * per_seq;
        let n_copies = (a.rotate_mb << 20).div_ceil(kv_bytes).clamp(1, 16);
        // Uniform values in [-1, 1), copied over every cache tensor in tiles.
        let tile = (1u64 << 21).min(per_seq * per_cache as u64 / es).max(1) as usize;
        let mut rng = Rng::new(a.bench.seed);
        let values: Vec<f32> = (0..tile)
            .map(|_| (rng.uniform() * 2.0 - 1.0) as f32)
            .collect();
        let pattern = dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("cache fill pattern"),
            contents: &sbattn::to_bytes(&values, dtype),
            usage: wgpu::BufferUsages::COPY_SRC,
        });
        let mut copies = Vec::new();
        for _ in 0..n_copies {
            let mut enc = dev.create_command_encoder(&Default::default());
            let mut caches = Vec::new();
            for &b in &sizes {
                let mut desc = KvCacheDesc::new(b, kv_heads, head_dim, len, dtype);
                if let Some(page) = a.page_size {
                    desc = desc.with_pages(page, b * len.div_ceil(page.max(1)));
                }
                let mut cache =
                    try_alloc(dev, || KvCache::new(attn, desc))?.map_err(|e| e.to_string())?;
                if let Some(page) = a.page_size {
                    // Each sequence's pages spread over the pool, as an engine's allocator leaves them.
                    let per_seq = len.div_ceil(page) as usize;
                    let pool = crate::prefill::shuffled(b * per_seq as u32, a.bench.seed);
                    for (i, pages) in pool.chunks(per_seq).enumerate() {
                        cache
                            .set_pages(attn, &mut enc, i as u32, pages)
                            .map_err(|e| e.to_string())?;
                    }
                }
                if !a.zeros {
                    for t in [cache.k().buffer, cache.v().buffer] {
                        let mut at = 0;
                        while at < t.size() {
                            let n = (pattern.size() & !3).min(t.size() - at);
                            if n == 0 {
                                break;
                            }
                            enc.copy_buffer_to_buffer(&pattern, 0, t, at, n);
                            at += n;
                        }
                    }
                }
                cache
                    .set_lengths(attn, &mut enc, &vec![len; b as usize])
                    .map_err(|e| e.to_string())?;
                caches.push(cache);
            }
            attn.queue().submit([enc.finish()]);
            copies.push(caches);
        }
        let qo = (batch * heads * head_dim) as u64;
        let q: Vec<f32> = (0..qo)
            .map(|i| 0.1 * Rng::normal_at(a.bench.seed ^ 0x9, i))
            .collect();
        let q = sbattn::upload(dev, "q", &q, dtype);
        let o = sbattn::zeroed(dev, "o", qo * es);
        wait(attn)?;
        Ok(ShapeSet { copies, q, o })
    }

    fn destroy(&self) {
        for c in self.copies.iter().flatten() {
            c.k().buffer.destroy();
            c.v().buffer.destroy();
        }
        self.q.destroy();
        self.o.destroy();
    }
}

/// Times decode steps of `c` over `set`, and says how they run.
fn measure(
    attn: &Attention,
    timer: &Timer,
    sampling: &Sampling,
    set: &ShapeSet,
    heads: u32,
    path: KernelPath,
    tuning: DecodeTuning,
) -> Result<(Timing, DecodePlan)> {
    // One list of calls per copy of the caches; a step decodes one copy.
    let calls: Vec<Vec<Decode<'_>>> = set
        .copies
        .iter()
        .map(|caches| {
            let mut first = 0u64;
            caches
                .iter()
                .map(|c| {
                    let at = first * (heads * c.desc().head_dim) as u64;
                    first += c.desc().batch as u64;
                    let t = |buf| TensorRef::bthd(buf).at_offset(at);
                    Decode::new(c, heads, 1, t(&set.q), t(&set.o))
                        .with_mask(Mask::IncludeCurrent)
                        .with_path(path)
                        .with_tuning(tuning)
                })
                .collect()
        })
        .collect();
    let plan = attn.decode_plan(&calls[0][0]).map_err(|e| e.to_string())?;
    let mut record = |enc: &mut wgpu::CommandEncoder, i: usize| {
        calls[i % calls.len()]
            .iter()
            .try_for_each(|c| attn.decode(enc, c))
            .map_err(|e| e.to_string())
    };
    Ok((timer.measure(attn, sampling, &mut record)?, plan))
}

/// A bandwidth ceiling in the JSON.
#[derive(Clone, Debug, Serialize)]
struct ProbeJson {
    bytes: u64,
    median_ms: f64,
    min_ms: f64,
    spread: f64,
    /// Bytes read (the copy: read plus written) per second at the median.
    gbps: f64,
}

impl ProbeJson {
    fn of(bytes: u64, moved: f64, t: &Timing) -> Option<ProbeJson> {
        let s = summarize(&t.samples)?.scaled(1e3);
        Some(ProbeJson {
            bytes,
            median_ms: s.median,
            min_ms: s.min,
            spread: s.spread,
            gbps: moved / (s.median * 1e-3) * 1e-9,
        })
    }
}

/// wgpu's buffer copy of `size` bytes (reads plus writes).
fn copy_bandwidth(attn: &Attention, timer: &Timer, s: &Sampling, size: u64) -> Result<ProbeJson> {
    let dev = attn.device();
    let usage = wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
    let make = || {
        dev.create_buffer(&wgpu::BufferDescriptor {
            label: Some("copy"),
            size,
            usage,
            mapped_at_creation: false,
        })
    };
    let (a, b) = try_alloc(dev, || (make(), make()))?;
    let mut record = |enc: &mut wgpu::CommandEncoder, _: usize| {
        enc.copy_buffer_to_buffer(&a, 0, &b, 0, size);
        Ok(())
    };
    let t = timer.measure(attn, s, &mut record)?;
    a.destroy();
    b.destroy();
    ProbeJson::of(size, 2.0 * size as f64, &t).ok_or_else(|| "no samples".into())
}

/// The read probe over `size` bytes.
fn read_bandwidth(attn: &Attention, timer: &Timer, s: &Sampling, size: u64) -> Result<ProbeJson> {
    let dev = attn.device();
    let src = try_alloc(dev, || {
        dev.create_buffer(&wgpu::BufferDescriptor {
            label: Some("probe src"),
            size,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        })
    })?;
    let dst = dev.create_buffer(&wgpu::BufferDescriptor {
        label: Some("probe dst"),
        size: 4 * 256 * PROBE_GRID as u64,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let desc = wgpu::ShaderModuleDescriptor {
        label: Some("read probe"),
        source: wgpu::ShaderSource::Wgsl(READ_PROBE_WGSL.into()),
    };
    // SAFETY: both loops of the probe end (i grows by the grid stride up to arrayLength) and
    // every index is below arrayLength(&src) or the invocation count dst was sized for.
    let module =
        unsafe { dev.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked()) };
    let pipeline = dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("read probe"),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let group = dev.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("read probe"),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry {
                binding: 0,
                resource: src.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: dst.as_entire_binding(),
            },
        ],
    });
    let mut record = |enc: &mut wgpu::CommandEncoder, _: usize| {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("read probe"),
            timestamp_writes: None,
        });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &group, &[]);
        pass.dispatch_workgroups(PROBE_GRID, 1, 1);
        Ok(())
    };
    let t = timer.measure(attn, s, &mut record)?;
    src.destroy();
    dst.destroy();
    ProbeJson::of(size, size as f64, &t).ok_or_else(|| "no samples".into())
}

/// The plan of a result in the JSON.
#[derive(Clone, Debug, Serialize)]
struct PlanJson {
    path: &'static str,
    load: String,
    lanes: u32,
    cols: u32,
    rows: u32,
    keys_per_step: u32,
    splits: u32,
    row_blocks: u32,
    label: String,
}

impl PlanJson {
    fn of(p: &DecodePlan) -> PlanJson {
        let v = &p.variant;
        PlanJson {
            path: path_name(v.path),
            load: format!("{:?}", v.load),
            lanes: v.lanes,
            cols: v.cols,
            rows: v.rows,
            keys_per_step: v.keys_per_step,
            splits: p.splits,
            row_blocks: p.row_blocks,
            label: decode_plan_label(p),
        }
    }
}

/// The check of a result in the JSON.
#[derive(Clone, Debug, Serialize)]
struct CheckJson {
    batch: u32,
    cache_len: u32,
    #[serde(flatten)]
    verdict: Option<Verdict>,
    error: Option<String>,
}

/// One measured configuration in the JSON.
#[derive(Clone, Debug, Serialize)]
struct DecodeResult {
    batch: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    cache_len: u32,
    new_tokens: u32,
    dtype: &'static str,
    checks: &'static str,
    path_requested: &'static str,
    lanes_forced: Option<u32>,
    vec_forced: Option<String>,
    keys_forced: Option<u32>,
    splits_forced: Option<u32>,
    caches: u32,
    copies: u32,
    plan: Option<PlanJson>,
    kv_bytes: f64,
    timer: &'static str,
    calls_per_sample: u32,
    iters: usize,
    median_ms: f64,
    min_ms: f64,
    spread: f64,
    gbps_median: f64,
    gbps_best: f64,
    samples_ms: Vec<f64>,
    check: Option<CheckJson>,
    error: Option<String>,
}

/// The JSON file of a run.
#[derive(Clone, Debug, Serialize)]
struct DecodeDoc {
    tool: &'static str,
    format: u32,
    date: String,
    command: String,
    profile: String,
    adapter: Option<AdapterJson>,
    timer: String,
    statistics: &'static str,
    sampling: SamplingJson,
    read_probe: Option<ProbeJson>,
    copy: Option<ProbeJson>,
    ref_gbps: Option<f64>,
    complete: bool,
    results: Vec<DecodeResult>,
    skipped: Vec<Skip>,
}

/// The sampling settings in the JSON.
#[derive(Clone, Debug, Serialize)]
struct SamplingJson {
    iters: u32,
    warmup: u32,
    batch: u32,
    sample_ms: f64,
    time_limit_s: f64,
    rotate_mb: u64,
    check_len: u32,
    seed: u64,
}

const COLUMNS: &[(&str, Align)] = &[
    ("B", Align::Right),
    ("L", Align::Right),
    ("dtype", Align::Left),
    ("checks", Align::Left),
    ("path", Align::Left),
    ("lanes", Align::Right),
    ("vec", Align::Right),
    ("keys", Align::Right),
    ("splits", Align::Right),
    ("median ms", Align::Right),
    ("min ms", Align::Right),
    ("spread", Align::Right),
    ("GB/s", Align::Right),
    ("%probe", Align::Right),
    ("%ref", Align::Right),
    ("max err", Align::Right),
    ("tol", Align::Right),
    ("samples", Align::Right),
    ("plan", Align::Left),
];

/// The configurations of a sweep: the library's choice first, then every combination.
fn configs(a: &DecodeArgs) -> Vec<Config> {
    let mut out = vec![Config::AUTO];
    for path in expand_paths(&a.paths, false) {
        for &lanes in &a.lanes {
            for &vec in &a.vec {
                for &keys in &a.keys {
                    for &splits in &a.splits {
                        let c = Config {
                            path,
                            lanes,
                            vec,
                            keys,
                            splits,
                        };
                        if !out.contains(&c) {
                            out.push(c);
                        }
                    }
                }
            }
        }
    }
    out
}

/// Runs `sbattn bench decode`.
///
/// # Errors
/// No adapter, a timer the device lacks, writing the JSON or the plot.
pub fn run(a: &DecodeArgs) -> Result<Outcome> {
    let sampling = a.bench.sampling();
    let shapes = a.shapes();
    let configs = configs(a);
    let contexts = a.bench.checks();
    let mut doc = DecodeDoc {
        tool: "sbattn bench decode",
        format: 2,
        date: utc_now(),
        command: command_line(),
        profile: format!("{:?}", a.bench.profile).to_lowercase(),
        adapter: None,
        timer: String::new(),
        statistics: crate::forward::STATISTICS,
        sampling: SamplingJson {
            iters: sampling.iters,
            warmup: sampling.warmup,
            batch: sampling.batch,
            sample_ms: sampling.sample_ms,
            time_limit_s: sampling.time_limit_s,
            rotate_mb: a.rotate_mb,
            check_len: a.check_len,
            seed: a.bench.seed,
        },
        read_probe: None,
        copy: None,
        ref_gbps: a.ref_gbps,
        complete: false,
        results: Vec::new(),
        skipped: Vec::new(),
    };
    let table = Table::new(COLUMNS)
        .with_widths(&[3, 6, 5, 9, 8, 5, 6, 4, 6, 9, 9, 6, 7, 6, 4, 7, 7, 7, 32]);
    let mut progress: Option<Progress> = None;
    let mut failed = 0usize;
    for (ci, &checks) in contexts.iter().enumerate() {
        let attn = context(checks)?;
        let errors = ErrorSlot::install(&attn);
        let timer = Timer::new(&attn, a.bench.timer)?;
        let dtypes: Vec<Dtype> = if a.dtypes.is_empty() {
            vec![if attn.capabilities().f16() {
                Dtype::F16
            } else {
                Dtype::F32
            }]
        } else {
            a.dtypes.iter().map(|d| d.dtype()).collect()
        };
        if ci == 0 {
            let adapter = AdapterJson::of(&attn);
            println!("{}", adapter.line(&timer.describe()));
            let l = attn.device().limits();
            let probe = a
                .probe_bytes()
                .min(l.max_buffer_size)
                .min(l.max_storage_buffer_binding_size)
                / 16
                * 16;
            if probe > 0 {
                match errors.check(read_bandwidth(&attn, &timer, &sampling, probe)) {
                    Ok(p) => {
                        println!(
                            "WGSL read probe: {} GB/s (read, {} MiB)",
                            fmt_sig(p.gbps, 3),
                            probe >> 20
                        );
                        doc.read_probe = Some(p);
                    }
                    Err(e) => eprintln!("read probe: {e}"),
                }
                match errors.check(copy_bandwidth(&attn, &timer, &sampling, probe)) {
                    Ok(p) => {
                        println!(
                            "wgpu buffer copy: {} GB/s (read + write, {} MiB)",
                            fmt_sig(p.gbps, 3),
                            probe >> 20
                        );
                        doc.copy = Some(p);
                    }
                    Err(e) => eprintln!("buffer copy: {e}"),
                }
            }
            println!(
                "H{}/{} D{}, one new token per sequence seeing every cached key; statistics: {}; GB/s = K and V bytes / median\n",
                a.heads,
                a.kv_heads,
                a.head_dim,
                crate::forward::STATISTICS
            );
            println!("{}", table.header());
            doc.adapter = Some(adapter);
            doc.timer = timer.name().into();
            progress = Some(Progress::new(
                (contexts.len() * dtypes.len() * shapes.len() * configs.len()) as u64,
            ));
        }
        let progress = progress.as_ref().expect("made with the first context");
        let pct = |gbps: f64| {
            let of = |c: Option<f64>| c.map(|c| 100.0 * gbps / c);
            (of(doc.read_probe.as_ref().map(|p| p.gbps)), of(a.ref_gbps))
        };
        let mut checked: HashMap<(Dtype, Config, u32), Result<Verdict>> = HashMap::new();
        for &dtype in &dtypes {
            for &(b, len) in &shapes {
                progress.set_message(format!(
                    "B{b} L{len} {}: filling the caches",
                    dtype_name(dtype)
                ));
                let set = errors.check(ShapeSet::new(&attn, a, dtype, b, len));
                let kv_bytes = 2.0
                    * b as f64
                    * a.kv_heads as f64
                    * len as f64
                    * a.head_dim as f64
                    * dtype.size() as f64;
                for &c in &configs {
                    progress.set_message(format!(
                        "B{b} L{len} {} {}",
                        dtype_name(dtype),
                        path_name(c.path)
                    ));
                    let tuning = c.tuning(dtype);
                    let mut r = DecodeResult {
                        batch: b,
                        heads: a.heads,
                        kv_heads: a.kv_heads,
                        head_dim: a.head_dim,
                        cache_len: len,
                        new_tokens: 1,
                        dtype: dtype_name(dtype),
                        checks: checks_name(checks),
                        path_requested: path_name(c.path),
                        lanes_forced: c.lanes.get(),
                        vec_forced: c.vec.get().map(|v| v.to_string()),
                        keys_forced: c.keys.get(),
                        splits_forced: c.splits.get(),
                        caches: 0,
                        copies: 0,
                        plan: None,
                        kv_bytes,
                        timer: timer.name(),
                        calls_per_sample: 0,
                        iters: 0,
                        median_ms: f64::NAN,
                        min_ms: f64::NAN,
                        spread: f64::NAN,
                        gbps_median: f64::NAN,
                        gbps_best: f64::NAN,
                        samples_ms: Vec::new(),
                        check: None,
                        error: None,
                    };
                    let measured = match (&set, &tuning) {
                        (Err(e), _) | (_, Err(e)) => Err(e.clone()),
                        (Ok(set), Ok(t)) => {
                            r.caches = set.copies[0].len() as u32;
                            r.copies = set.copies.len() as u32;
                            errors
                                .check(measure(&attn, &timer, &sampling, set, a.heads, c.path, *t))
                        }
                    };
                    match measured {
                        Err(e) => r.error = Some(e),
                        Ok((t, plan)) => {
                            let s = summarize(&t.samples).map(|s| s.scaled(1e3));
                            let Summary {
                                n,
                                median,
                                min,
                                spread,
                                ..
                            } = s.unwrap_or(Summary {
                                n: 0,
                                median: f64::NAN,
                                min: f64::NAN,
                                max: f64::NAN,
                                p10: f64::NAN,
                                p90: f64::NAN,
                                spread: f64::NAN,
                            });
                            r.plan = Some(PlanJson::of(&plan));
                            r.calls_per_sample = t.batch;
                            r.iters = n;
                            r.median_ms = median;
                            r.min_ms = min;
                            r.spread = spread;
                            r.gbps_median = kv_bytes / (median * 1e-3) * 1e-9;
                            r.gbps_best = kv_bytes / (min * 1e-3) * 1e-9;
                            r.samples_ms = t.samples.iter().map(|x| x * 1e3).collect();
                        }
                    }
                    if let (Some(t), true, None) = (tuning.as_ref().ok(), a.check_len > 0, &r.error)
                    {
                        let cb = b.min(2);
                        let verdict = checked
                            .entry((dtype, c, cb))
                            .or_insert_with(|| {
                                let case = DecodeCase {
                                    batch: cb,
                                    heads: a.heads,
                                    kv_heads: a.kv_heads,
                                    head_dim: a.head_dim,
                                    dtype,
                                    path: c.path,
                                    prefill: a.check_len - 1,
                                    steps: 1,
                                    new_tokens: 1,
                                    mask: Mask::IncludeCurrent,
                                    rem: RemMode::Discard,
                                    layout: Layout::Bhtd,
                                    tuning: *t,
                                };
                                errors.check(
                                    run_decode_case(&attn, &case, a.bench.seed).map(|(v, _)| v),
                                )
                            })
                            .clone();
                        if verdict.as_ref().is_ok_and(|v| !v.pass) || verdict.is_err() {
                            failed += 1;
                        }
                        r.check = Some(match verdict {
                            Ok(v) => CheckJson {
                                batch: cb,
                                cache_len: a.check_len,
                                verdict: Some(v),
                                error: None,
                            },
                            Err(e) => CheckJson {
                                batch: cb,
                                cache_len: a.check_len,
                                verdict: None,
                                error: Some(e),
                            },
                        });
                    }
                    progress.println(&table.row(&cells(&r, &c, pct(r.gbps_median))));
                    if let Some(e) = &r.error {
                        progress.note(&format!("  B{b} L{len} {}: {e}", path_name(c.path)));
                    }
                    doc.results.push(r);
                    if let Some(p) = &a.bench.json {
                        save_json(p, &doc)?;
                    }
                    progress.inc();
                }
                if let Ok(set) = &set {
                    set.destroy();
                }
                wait(&attn)?;
            }
        }
    }
    if let Some(p) = &progress {
        p.finish();
    }
    println!("\n{}", summary(&doc, &shapes));
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

/// The table row of one result.
fn cells(r: &DecodeResult, c: &Config, (pp, pr): (Option<f64>, Option<f64>)) -> Vec<String> {
    let err = match &r.check {
        None => "-".to_string(),
        Some(CheckJson {
            verdict: Some(v), ..
        }) if v.pass => fmt_err(v.err),
        Some(CheckJson {
            verdict: Some(v), ..
        }) => format!("FAIL {}", fmt_err(v.err)),
        Some(_) => "ERROR".into(),
    };
    let tol = match &r.check {
        Some(CheckJson {
            verdict: Some(v), ..
        }) => fmt_err(v.tol),
        _ => "-".to_string(),
    };
    let plan = match (&r.plan, &r.error) {
        (_, Some(_)) => "error (stderr)".to_string(),
        (Some(p), None) => format!(
            "{}{}",
            p.label,
            if r.caches > 1 {
                format!(" x{} caches", r.caches)
            } else {
                String::new()
            }
        ),
        (None, None) => String::new(),
    };
    vec![
        r.batch.to_string(),
        r.cache_len.to_string(),
        r.dtype.into(),
        r.checks.into(),
        path_name(c.path).into(),
        c.lanes.to_string(),
        c.vec.to_string(),
        c.keys.to_string(),
        c.splits.to_string(),
        fmt_ms(r.median_ms),
        fmt_ms(r.min_ms),
        if r.spread.is_finite() {
            format!("{:.1}%", 100.0 * r.spread)
        } else {
            "-".into()
        },
        fmt_sig(r.gbps_median, 3),
        fmt_pct(pp),
        fmt_pct(pr),
        err,
        tol,
        if r.iters > 0 {
            format!("{}x{}", r.calls_per_sample, r.iters)
        } else {
            "-".into()
        },
        plan,
    ]
}

/// Per shape and dtype: the library's choice (the first configuration measured) and the
/// fastest by median.
fn summary(doc: &DecodeDoc, shapes: &[(u32, u32)]) -> String {
    let mut rows = Vec::new();
    let mut dtypes: Vec<&str> = Vec::new();
    for r in &doc.results {
        if !dtypes.contains(&r.dtype) {
            dtypes.push(r.dtype);
        }
    }
    for dtype in dtypes {
        for &(b, len) in shapes {
            let ok: Vec<&DecodeResult> = doc
                .results
                .iter()
                .filter(|r| {
                    (r.batch, r.cache_len, r.dtype) == (b, len, dtype) && r.median_ms.is_finite()
                })
                .collect();
            let (Some(first), Some(best)) = (
                ok.first(),
                ok.iter().min_by(|x, y| x.median_ms.total_cmp(&y.median_ms)),
            ) else {
                continue;
            };
            let forced = |r: &DecodeResult| {
                let o = |x: Option<u32>| x.map_or("auto".to_string(), |v| v.to_string());
                format!(
                    "{} {} lanes {} vec {} keys {} splits {}",
                    r.checks,
                    r.path_requested,
                    o(r.lanes_forced),
                    r.vec_forced.clone().unwrap_or("auto".into()),
                    o(r.keys_forced),
                    o(r.splits_forced)
                )
            };
            rows.push(vec![
                b.to_string(),
                len.to_string(),
                dtype.to_string(),
                fmt_ms(first.median_ms),
                fmt_sig(first.gbps_median, 3),
                fmt_ms(best.median_ms),
                fmt_sig(best.gbps_median, 3),
                forced(best),
                best.plan
                    .as_ref()
                    .map_or(String::new(), |p| p.label.clone()),
            ]);
        }
    }
    let cols = [
        ("B", Align::Right),
        ("L", Align::Right),
        ("dtype", Align::Left),
        ("auto ms", Align::Right),
        ("auto GB/s", Align::Right),
        ("best ms", Align::Right),
        ("best GB/s", Align::Right),
        ("fastest configuration", Align::Left),
        ("its plan", Align::Left),
    ];
    format!(
        "summary (the library's choice, and the fastest configuration by median):\n\n{}",
        Table::render(&cols, &rows)
    )
}

/// `--plot`: time and GB/s against the cache length.
fn draw(a: &DecodeArgs, doc: &DecodeDoc, path: &std::path::Path) -> Result<()> {
    let items: Vec<Item> = doc
        .results
        .iter()
        .filter(|r| r.error.is_none())
        .map(|r| {
            // The forced choices only: `auto`, `shared P16 s32`, `16B U2`.
            let mut forced: Vec<String> = Vec::new();
            if r.path_requested != "auto" {
                forced.push(r.path_requested.to_string());
            }
            forced.extend(r.lanes_forced.map(|v| format!("P{v}")));
            forced.extend(r.vec_forced.clone());
            forced.extend(r.keys_forced.map(|v| format!("U{v}")));
            forced.extend(r.splits_forced.map(|v| format!("s{v}")));
            let config = if forced.is_empty() {
                "auto".to_string()
            } else {
                forced.join(" ")
            };
            Item {
                dims: vec![config, r.dtype.to_string(), format!("checks {}", r.checks)],
                family: (r.batch, r.heads, r.kv_heads, r.head_dim),
                x: r.cache_len as f64,
                ms: r.median_ms,
                rate: r.gbps_median,
                preferred: r.path_requested == "auto"
                    && r.lanes_forced.is_none()
                    && r.vec_forced.is_none()
                    && r.keys_forced.is_none()
                    && r.splits_forced.is_none(),
            }
        })
        .collect();
    let mut baselines = match &a.bench.baselines {
        Some(p) => plot::read_baselines(p, BaselineKind::Decode)?,
        None => Vec::new(),
    };
    // The read probe of this run, as a line through every measured length of each batch size.
    if let Some(p) = &doc.read_probe {
        let ok: Vec<&DecodeResult> = doc.results.iter().filter(|r| r.error.is_none()).collect();
        let many = ok.iter().any(|r| r.dtype != ok[0].dtype);
        let mut seen = Vec::new();
        for r in ok {
            let family = (r.batch, r.heads, r.kv_heads, r.head_dim);
            if !seen.contains(&(family, r.cache_len, r.dtype)) {
                seen.push((family, r.cache_len, r.dtype));
                let label = if many {
                    format!("read probe, {}", r.dtype)
                } else {
                    "read probe".into()
                };
                let ms = r.kv_bytes / (p.gbps * 1e9) * 1e3;
                baselines.push(plot::Baseline {
                    label,
                    family,
                    x: r.cache_len as f64,
                    ms,
                    rate: p.gbps,
                });
            }
        }
    }
    let adapter = doc
        .adapter
        .as_ref()
        .map_or(String::new(), |x| x.name.clone());
    let spec = PlotSpec {
        title: format!(
            "sbattn decode on {adapter} ({} timer, median, H{}/{} D{})",
            doc.timer, a.heads, a.kv_heads, a.head_dim
        ),
        x_label: "cache length L".into(),
        rate_label: "GB/s of K and V".into(),
    };
    plot::draw(
        path,
        &spec,
        &plot::series(&items, &baselines, BaselineKind::Decode),
    )
}
