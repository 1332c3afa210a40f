//! `sbattn bench backward`: a training step's attention, per path: the forward (saving
//! `log rem`), the backward, and the two recorded one after the other, each timed by
//! [`crate::timer`] and summarised by [`crate::stats`]; a markdown table on stdout, `--json`.
//!
//! The backward kernels have no tensor-core variant: with `--paths coop` the forward runs on the
//! tensor cores and the backward on the library's automatic (portable) path, as a trainer on that
//! GPU would run them. Correctness is the test suite's (`tests/backward.rs`, which the device
//! script runs on the same GPU); inputs are `N(0, 1)` from [`sbattn::reference::Rng`], never
//! zeros.

use sbattn::reference::Rng;
use sbattn::{Attention, Backward, BufferRef, Dtype, Forward, KernelPath, Shape, TensorRef};
use serde::Serialize;

use crate::args::{BackwardArgs, expand_paths};
use crate::gpu::{ErrorSlot, checks_name, context, dtype_name, path_name, try_alloc, wait};
use crate::plot::{self, BaselineKind, Item, PlotSpec};
use crate::report::{AdapterJson, Align, DocHeader, Progress, Skip, Table, fmt_ms, fmt_sig, save_json, shape_name};
use crate::stats::{Summary, summarize};
use crate::timer::{Sampling, Timer};
use crate::{Outcome, Result};

/// One row: a shape, dtype and path, its three timings.
#[derive(Clone, Debug, Serialize)]
pub struct BackwardRow {
    /// `BxHxTxD` (H may be H/Hkv).
    pub shape: String,
    /// Storage type.
    pub dtype: &'static str,
    /// Runtime checks of the context.
    pub checks: &'static str,
    /// Forward path asked for.
    pub forward_path: &'static str,
    /// Backward path asked for (`auto` where the forward path has no backward kernel).
    pub backward_path: &'static str,
    /// The backward variant that ran.
    pub backward_variant: String,
    /// Seconds per forward call.
    pub forward: Summary,
    /// Seconds per backward call.
    pub backward: Summary,
    /// Seconds per forward + backward pair.
    pub step: Summary,
}

/// The JSON file.
#[derive(Debug, Serialize)]
struct BackwardDoc {
    #[serde(flatten)]
    head: DocHeader,
    results: Vec<BackwardRow>,
    skipped: Vec<Skip>,
}

const COLUMNS: &[(&str, Align)] = &[
    ("B H T D", Align::Left),
    ("dtype", Align::Left),
    ("checks", Align::Left),
    ("fwd path", Align::Left),
    ("bwd path", Align::Left),
    ("fwd ms", Align::Right),
    ("bwd ms", Align::Right),
    ("bwd/fwd", Align::Right),
    ("fwd+bwd ms", Align::Right),
    ("spread", Align::Right),
];

/// The buffers of one shape (inputs random, outputs zeroed).
struct Tensors {
    q: wgpu::Buffer,
    k: wgpu::Buffer,
    v: wgpu::Buffer,
    o: wgpu::Buffer,
    d_o: wgpu::Buffer,
    log_rem: wgpu::Buffer,
    dq: wgpu::Buffer,
    dk: wgpu::Buffer,
    dv: wgpu::Buffer,
}

/// `n` values ~ N(0, 1) of stream `stream`, uploaded as `dtype`.
pub fn random_buffer(attn: &Attention, label: &str, n: u64, dtype: Dtype, seed: u64, stream: u64) -> Result<wgpu::Buffer> {
    let data: Vec<f32> = (0..n).map(|i| Rng::normal_at(seed ^ (stream << 40), i)).collect();
    try_alloc(attn.device(), || sbattn::upload(attn.device(), label, &data, dtype))
}

impl Tensors {
    fn new(attn: &Attention, s: &Shape, dtype: Dtype, seed: u64) -> Result<Tensors> {
        let (b, t, d) = (s.batch() as u64, s.seq_len() as u64, s.head_dim() as u64);
        let nq = b * t * s.heads() as u64 * d;
        let nk = b * t * s.kv_heads() as u64 * d;
        let es = dtype.size();
        let zero = |label: &str, bytes: u64| try_alloc(attn.device(), || sbattn::zeroed(attn.device(), label, bytes));
        Ok(Tensors {
            q: random_buffer(attn, "q", nq, dtype, seed, 1)?,
            k: random_buffer(attn, "k", nk, dtype, seed, 2)?,
            v: random_buffer(attn, "v", nk, dtype, seed, 3)?,
            d_o: random_buffer(attn, "d_o", nq, dtype, seed, 4)?,
            o: zero("o", nq * es)?,
            log_rem: zero("log_rem", 4 * s.rows())?,
            dq: zero("dq", nq * es)?,
            dk: zero("dk", nk * es)?,
            dv: zero("dv", nk * es)?,
        })
    }

    fn destroy(&self) {
        for b in [&self.q, &self.k, &self.v, &self.o, &self.d_o, &self.log_rem, &self.dq, &self.dk, &self.dv] {
            b.destroy();
        }
    }
}

/// Times the forward, the backward and both of one configuration.
fn measure(attn: &Attention, timer: &Timer, sampling: &Sampling, x: &Tensors, (s, dtype): (Shape, Dtype), (fwd_path, bwd_path): (KernelPath, KernelPath)) -> Result<[Summary; 3]> {
    let t = TensorRef::bthd;
    let fwd = Forward::new(s, dtype, t(&x.q), t(&x.k), t(&x.v), t(&x.o)).with_log_rem(BufferRef::new(&x.log_rem)).with_path(fwd_path);
    let bwd = Backward::new(&fwd, t(&x.d_o), t(&x.dq), t(&x.dk), t(&x.dv)).with_path(bwd_path);
    let err = |e: sbattn::Error| e.to_string();
    // The forward first, so that the backward reads a real `o` and `log rem`.
    let mut enc = attn.device().create_command_encoder(&Default::default());
    attn.forward(&mut enc, &fwd).map_err(err)?;
    attn.queue().submit([enc.finish()]);
    wait(attn)?;
    let mut out = Vec::new();
    for which in 0..3 {
        let timing = timer.measure(attn, sampling, &mut |enc, _| {
            if which != 1 {
                attn.forward(enc, &fwd).map_err(err)?;
            }
            if which != 0 {
                attn.backward(enc, &bwd).map_err(err)?;
            }
            Ok(())
        })?;
        out.push(summarize(&timing.samples).ok_or("no finite samples")?);
    }
    Ok([out[0], out[1], out[2]])
}

/// Work of one training step's attention: the forward's `4 B H (T^2/2) D` and the backward's
/// 2.5 times that (the convention of FlashAttention's and FLA's benchmarks).
fn step_flops(s: &Shape) -> f64 {
    3.5 * s.forward_flops()
}

/// Forward + backward time and TFLOP/s against T, a line per forward path, dtype and checks
/// setting (and per B, H, D).
fn draw(path: &std::path::Path, doc: &BackwardDoc, shapes: &[Shape]) -> Result<()> {
    let items: Vec<Item> = doc
        .results
        .iter()
        .filter_map(|r| {
            let s = shapes.iter().find(|s| shape_name(s) == r.shape)?;
            Some(Item {
                dims: vec![format!("fwd {} + bwd {}", r.forward_path, r.backward_path), r.dtype.into(), r.checks.into()],
                family: (s.batch(), s.heads(), s.kv_heads(), s.head_dim()),
                x: s.seq_len() as f64,
                ms: r.step.median * 1e3,
                rate: step_flops(s) / r.step.median * 1e-12,
                preferred: false,
            })
        })
        .collect();
    let adapter = doc.head.adapter.as_ref().map_or(String::new(), |x| x.name.clone());
    let spec = PlotSpec {
        title: format!("sbattn forward + backward on {adapter} ({}, median)", doc.head.timer),
        x_label: "sequence length T".into(),
        rate_label: "TFLOP/s (backward = 2.5 x forward work)".into(),
    };
    plot::draw(path, &spec, &plot::series(&items, &[], BaselineKind::Forward))
}

/// Runs `sbattn bench backward`.
///
/// # Errors
/// No adapter, a timer the device lacks, `--plot` (not drawn for this benchmark), writing the
/// JSON, drawing the plot.
pub fn run(a: &BackwardArgs) -> Result<Outcome> {
    if a.bench.baselines.is_some() {
        return Err("bench backward draws no baselines (their files time other work)".into());
    }
    let sampling = a.bench.sampling();
    let shapes = a.shapes();
    let mut doc = BackwardDoc {
        head: DocHeader::new("sbattn bench backward"),
        results: Vec::new(),
        skipped: Vec::new(),
    };
    let table = Table::new(COLUMNS);
    let mut header = false;
    let steps = a.bench.checks().len() * shapes.len() * a.dtypes.len() * expand_paths(&a.paths, true).len();
    let progress = Progress::new(steps as u64);
    for checks in a.bench.checks() {
        let attn = context(checks)?;
        let errors = ErrorSlot::install(&attn);
        let timer = Timer::new(&attn, a.bench.timer)?;
        if doc.head.adapter.is_none() {
            doc.head.adapter = Some(AdapterJson::of(&attn));
            doc.head.timer = timer.describe();
            println!("adapter: {} ({:?}); timer: {}\n", attn.capabilities().name, attn.capabilities().backend, doc.head.timer);
        }
        if !header {
            progress.println(&table.header());
            header = true;
        }
        for &shape in &shapes {
            for dtype in a.dtypes.iter().map(|d| d.dtype()) {
                let x = match errors.check(Tensors::new(&attn, &shape, dtype, a.bench.seed)) {
                    Ok(x) => x,
                    Err(e) => {
                        doc.skipped.push(Skip { what: format!("{} {}", shape_name(&shape), dtype_name(dtype)), reason: e });
                        continue;
                    }
                };
                for fwd_path in expand_paths(&a.paths, true) {
                    let what = format!("{} {} {}", shape_name(&shape), dtype_name(dtype), path_name(fwd_path));
                    progress.set_message(what.clone());
                    progress.inc();
                    // The forward path's own backward, else the automatic one (no tensor-core
                    // backward kernel): one variant lookup per configuration.
                    let d = shape.head_dim();
                    let chosen = attn
                        .backward_variant(dtype, d, fwd_path)
                        .map(|v| (fwd_path, v))
                        .or_else(|_| attn.backward_variant(dtype, d, KernelPath::Auto).map(|v| (KernelPath::Auto, v)))
                        .and_then(|c| attn.forward_variant(dtype, d, fwd_path).map(|_| c));
                    let (bwd_path, bv) = match chosen {
                        Ok((p, v)) => (p, format!("{v:?}")),
                        Err(e) => {
                            doc.skipped.push(Skip { what, reason: e.to_string() });
                            continue;
                        }
                    };
                    match errors.check(measure(&attn, &timer, &sampling, &x, (shape, dtype), (fwd_path, bwd_path))) {
                        Ok([f, b, step]) => {
                            let row = BackwardRow {
                                shape: shape_name(&shape),
                                dtype: dtype_name(dtype),
                                checks: checks_name(checks),
                                forward_path: path_name(fwd_path),
                                backward_path: path_name(bwd_path),
                                backward_variant: bv,
                                forward: f,
                                backward: b,
                                step,
                            };
                            progress.println(
                                &table.row(&[
                                    row.shape.clone(),
                                    row.dtype.into(),
                                    row.checks.into(),
                                    row.forward_path.into(),
                                    row.backward_path.into(),
                                    fmt_ms(f.median * 1e3),
                                    fmt_ms(b.median * 1e3),
                                    fmt_sig(b.median / f.median, 3),
                                    fmt_ms(step.median * 1e3),
                                    format!("{:.0}%", step.spread * 100.0),
                                ]),
                            );
                            doc.results.push(row);
                        }
                        Err(e) => doc.skipped.push(Skip { what, reason: e }),
                    }
                    if let Some(path) = &a.bench.json {
                        save_json(path, &doc)?;
                    }
                }
                x.destroy();
            }
        }
    }
    progress.finish();
    for s in &doc.skipped {
        println!("skipped {}: {}", s.what, s.reason);
    }
    if let Some(path) = &a.bench.json {
        save_json(path, &doc)?;
    }
    if let Some(path) = &a.bench.plot {
        draw(path, &doc, &shapes)?;
        println!("wrote {}", path.display());
    }
    Ok(if doc.results.is_empty() { Outcome::Failed("no configuration ran".into()) } else { Outcome::Passed })
}
