//! Training with sbattn: a one-layer attention model learns associative recall, with every
//! attention forward and backward pass on the GPU.
//!
//! ```sh
//! cargo run --release --example train              # the full run: >= 99% recall
//! cargo run --example train -- --quick             # a short run (CI, tests/train_example.rs): >= 80%
//! cargo run --example train -- --help             # every flag
//! ```
//!
//! # The task
//!
//! A sequence holds `P` (key, value) pairs, **one pair per token**: the token's features are
//! the concatenation of a random vector of its key symbol (one of `n_keys`, the `P` keys of a
//! sequence distinct) and a random vector of its value symbol (one of `n_vals`, drawn
//! uniformly and independently for every pair of every sequence). `Q` query tokens follow, each
//! holding only a key symbol of one of the pairs (zeros where a value would be, and a flag);
//! the answer at a query is the value symbol that was paired with its key earlier in the same
//! sequence. Every token also has a constant feature 1, so the projections have biases.
//!
//! **Why it needs attention.** The answer is not in the query token: the value paired with a
//! key is drawn afresh for every sequence, independently of the key, so any function of the
//! query token alone (a per-token MLP of any size) predicts the value with the chance accuracy
//! `1 / n_vals` (6.25% here). The answer lives in another token, at a position that changes
//! from sequence to sequence; a model must find the token whose key matches (content-based
//! addressing) and copy its value: one attention head with `q = x Wq`, `k = x Wk`, `v = x Wv`
//! can, if `Wq Wk^T` turns "same key symbol" into a large logit and every other pair into a very
//! negative one, and `Wv` carries the value part.
//!
//! # The model
//!
//! `q, k, v = x Wq, x Wk, x Wv` (`H` heads of size `D`), `o = attention(q, k, v)` with sbattn's
//! causal stick-breaking forward, and `logits = o Wo + bo` over the `n_vals` value symbols at
//! the query positions, trained with softmax cross-entropy averaged over the query positions
//! of the batch (no loss at the pair tokens).
//!
//! - **Mask: `Mask::Strict`** (key `j` visible to query `i` when `j < i`). A query token holds
//!   its own key symbol, so under `Mask::IncludeCurrent` it would match itself best, and
//!   stick-breaking walks nearest first: the current token would take the stick before the
//!   real pair could, and it carries no value.
//! - **Remainder: `Remainder::Discard`.** The part of the stick no key takes is dropped (a query
//!   that finds nothing gets `o = 0`, so the logits fall back to `bo`); nothing is learned for it.
//! - **Storage: f32**, the automatic kernel path.
//!
//! Every step: the features `x` and the projections on the CPU; `q`, `k`, `v` written to GPU
//! buffers made once; `Attention::forward` (saving `log rem`) and `o` read back; the loss, its
//! gradient `do` and the readout's gradients on the CPU (f32 products, f64 sums for the loss);
//! `do` written back and `Attention::backward` (the same buffers, `Backward::new` of the same
//! forward description) giving `dq`, `dk`, `dv`; `dWq = x^T dq` (and so on) on the CPU.
//! Optimizer: **SGD with momentum** (heavy ball, `vel = mu vel + grad; w -= lr vel`, mu 0.9, a
//! constant learning rate, no weight decay, no clipping).
//!
//! Before training, on the first batch, the GPU's `o`, `dq`, `dk`, `dv` are checked against the
//! f64 definition (`sbattn::reference::forward` and `::backward`) and a few entries of every
//! parameter gradient against central finite differences of the whole loss (reference forward):
//! the printed errors show that the gradients being followed are right.
//!
//! Every `--every` steps the loss (the mean over those steps) and the recall on a held-out batch
//! (its own seed, never trained on) are printed; the run stops when the recall reaches the
//! target, and exits with status 1 if it does not within `--steps`. `--reference` runs the same
//! training with the f64 reference attention on the CPU instead of the GPU, for comparison.
//! Deterministic: the task, the initial weights and the batches all come from
//! `sbattn::reference::Rng` seeded by `--seed`.

use std::time::Instant;

use sbattn::{
    from_bytes, reference, to_bytes, Attention, Backward, BufferRef, Dtype, Forward, HostInput, HostRemainder, Mask, Readback,
    Remainder, Shape, TensorRef,
};

type BoxError = Box<dyn std::error::Error>;

/// The mask the model uses (see the module documentation).
const MASK: Mask = Mask::Strict;

/// Everything a run depends on.
#[derive(Clone, Debug)]
pub struct Config {
    /// (key, value) pair tokens per sequence.
    pub pairs: usize,
    /// Query tokens per sequence (after the pairs; at most `pairs`).
    pub queries: usize,
    /// Key symbols (at least `pairs`).
    pub n_keys: usize,
    /// Value symbols (the classes).
    pub n_vals: usize,
    /// Size of a key symbol's vector.
    pub key_dim: usize,
    /// Size of a value symbol's vector.
    pub val_dim: usize,
    /// Attention heads.
    pub heads: u32,
    /// Head dim.
    pub head_dim: u32,
    /// Sequences per step.
    pub batch: u32,
    /// Held-out sequences.
    pub eval_batch: u32,
    /// Step limit.
    pub steps: usize,
    /// Learning rate.
    pub lr: f32,
    /// Momentum.
    pub momentum: f32,
    /// Held-out recall at which training stops.
    pub target: f64,
    /// Print (and evaluate) every this many steps.
    pub every: usize,
    /// Seed of the task, the weights and the batches.
    pub seed: u64,
    /// Attention on the CPU with the f64 reference instead of the GPU.
    pub reference: bool,
}

impl Config {
    /// The full run.
    pub fn full() -> Self {
        Config {
            pairs: 24,
            queries: 8,
            n_keys: 48,
            n_vals: 16,
            key_dim: 24,
            val_dim: 16,
            heads: 2,
            head_dim: 16,
            batch: 32,
            eval_batch: 128,
            steps: 3000,
            lr: 0.3,
            momentum: 0.9,
            target: 0.99,
            every: 50,
            seed: 1,
            reference: false,
        }
    }

    /// The shortened run (CI): fewer pairs, a lower target.
    pub fn quick() -> Self {
        Config { pairs: 12, queries: 4, n_keys: 32, steps: 800, target: 0.80, every: 25, eval_batch: 64, ..Config::full() }
    }

    /// Tokens per sequence.
    pub fn seq_len(&self) -> usize {
        self.pairs + self.queries
    }

    /// Features per token: key vector, value vector, query flag, constant 1.
    pub fn features(&self) -> usize {
        self.key_dim + self.val_dim + 2
    }

    /// Parses the command line (without the program name).
    pub fn from_args(args: &[String]) -> Result<Self, String> {
        let mut cfg = if args.iter().any(|a| a == "--quick") { Config::quick() } else { Config::full() };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            if flag == "--quick" {
                continue;
            }
            if flag == "--reference" {
                cfg.reference = true;
                continue;
            }
            if flag == "--help" || flag == "-h" {
                return Err(USAGE.into());
            }
            let value = it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
            let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
            match flag.as_str() {
                "--steps" => cfg.steps = value.parse().map_err(|e| bad(&e))?,
                "--pairs" => cfg.pairs = value.parse().map_err(|e| bad(&e))?,
                "--queries" => cfg.queries = value.parse().map_err(|e| bad(&e))?,
                "--keys" => cfg.n_keys = value.parse().map_err(|e| bad(&e))?,
                "--values" => cfg.n_vals = value.parse().map_err(|e| bad(&e))?,
                "--heads" => cfg.heads = value.parse().map_err(|e| bad(&e))?,
                "--head-dim" => cfg.head_dim = value.parse().map_err(|e| bad(&e))?,
                "--batch" => cfg.batch = value.parse().map_err(|e| bad(&e))?,
                "--lr" => cfg.lr = value.parse().map_err(|e| bad(&e))?,
                "--momentum" => cfg.momentum = value.parse().map_err(|e| bad(&e))?,
                "--target" => cfg.target = value.parse().map_err(|e| bad(&e))?,
                "--every" => cfg.every = value.parse().map_err(|e| bad(&e))?,
                "--seed" => cfg.seed = value.parse().map_err(|e| bad(&e))?,
                _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
            }
        }
        if cfg.queries == 0 || cfg.queries > cfg.pairs || cfg.pairs > cfg.n_keys || cfg.n_vals < 2 {
            return Err(format!("need 0 < queries <= pairs <= keys and values >= 2 (got {cfg:?})"));
        }
        if cfg.batch == 0 || cfg.heads == 0 || cfg.head_dim == 0 || cfg.every == 0 {
            return Err("batch, heads, head-dim and every must be positive".into());
        }
        Ok(cfg)
    }
}

const USAGE: &str = "usage: train [--quick] [--reference] [--steps N] [--pairs N] [--queries N] [--keys N] [--values N]
             [--heads N] [--head-dim N] [--batch N] [--lr X] [--momentum X] [--target X] [--every N] [--seed N]
  --quick      the shortened run: 12 pairs + 4 queries (T 16), 32 keys, target 0.80 recall, at most 800 steps
  --reference  attention on the CPU (sbattn::reference, f64) instead of the GPU
  defaults: 24 pairs + 8 queries (T 32), 48 keys, 16 values, 2 heads of 16, batch 32,
            lr 0.3, momentum 0.9, target 0.99 held-out recall, at most 3000 steps, seed 1";

/// What a run did.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Steps taken.
    pub steps: usize,
    /// The last held-out recall.
    pub accuracy: f64,
    /// Whether it reached the target.
    pub reached: bool,
    /// (step, mean loss of the last `every` steps, held-out recall) at every report.
    pub curve: Vec<(usize, f64, f64)>,
    /// Largest GPU-vs-reference error of `o`, `dq`, `dk`, `dv` at the start, relative to the
    /// largest reference magnitude of each (0 with `--reference`).
    pub attention_error: f64,
    /// Largest relative error of the sampled parameter gradients against finite differences.
    pub model_grad_error: f64,
    /// Seconds spent training (after the checks).
    pub seconds: f64,
}

/// Row-major `[rows, cols]` matrices, and the three products training needs.
mod mat {
    /// `a [m, k] b [k, n]`.
    pub fn mul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0.0f32; m * n];
        for i in 0..m {
            let row = &mut c[i * n..(i + 1) * n];
            for p in 0..k {
                let x = a[i * k + p];
                if x != 0.0 {
                    for (c, &b) in row.iter_mut().zip(&b[p * n..(p + 1) * n]) {
                        *c += x * b;
                    }
                }
            }
        }
        c
    }

    /// `a^T g` for `a [m, k]`, `g [m, n]`: `[k, n]`.
    pub fn tmul(a: &[f32], g: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0.0f32; k * n];
        for i in 0..m {
            let grow = &g[i * n..(i + 1) * n];
            for p in 0..k {
                let x = a[i * k + p];
                if x != 0.0 {
                    for (c, &g) in c[p * n..(p + 1) * n].iter_mut().zip(grow) {
                        *c += x * g;
                    }
                }
            }
        }
        c
    }

    /// `g w^T` for `g [m, n]`, `w [k, n]`: `[m, k]`.
    pub fn mul_t(g: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0.0f32; m * k];
        for i in 0..m {
            for p in 0..k {
                c[i * k + p] = g[i * n..(i + 1) * n].iter().zip(&w[p * n..(p + 1) * n]).map(|(a, b)| a * b).sum();
            }
        }
        c
    }
}

/// The symbols' vectors (fixed, random) and the batches.
struct Task {
    cfg: Config,
    key_vecs: Vec<f32>,
    val_vecs: Vec<f32>,
}

/// One batch: token features `[B, T, F]` and, per query, its row (`b T + t`) and answer.
struct Batch {
    x: Vec<f32>,
    queries: Vec<(usize, usize)>,
}

impl Task {
    fn new(cfg: &Config, rng: &mut reference::Rng) -> Self {
        // Unit-length on average, so every feature block has the same scale.
        let key_vecs = rng.normals(cfg.n_keys * cfg.key_dim, 1.0 / (cfg.key_dim as f32).sqrt());
        let val_vecs = rng.normals(cfg.n_vals * cfg.val_dim, 1.0 / (cfg.val_dim as f32).sqrt());
        Task { cfg: cfg.clone(), key_vecs, val_vecs }
    }

    fn batch(&self, rng: &mut reference::Rng, b: usize) -> Batch {
        let c = &self.cfg;
        let (t, f) = (c.seq_len(), c.features());
        let mut x = vec![0.0f32; b * t * f];
        let mut queries = Vec::with_capacity(b * c.queries);
        let below = |rng: &mut reference::Rng, n: usize| (rng.next_u64() % n as u64) as usize;
        for s in 0..b {
            // P distinct keys (a partial Fisher-Yates shuffle), each with a random value.
            let mut keys: Vec<usize> = (0..c.n_keys).collect();
            for i in 0..c.pairs {
                let j = i + below(rng, c.n_keys - i);
                keys.swap(i, j);
            }
            let vals: Vec<usize> = (0..c.pairs).map(|_| below(rng, c.n_vals)).collect();
            for p in 0..c.pairs {
                let tok = &mut x[(s * t + p) * f..(s * t + p + 1) * f];
                tok[..c.key_dim].copy_from_slice(&self.key_vecs[keys[p] * c.key_dim..(keys[p] + 1) * c.key_dim]);
                tok[c.key_dim..c.key_dim + c.val_dim].copy_from_slice(&self.val_vecs[vals[p] * c.val_dim..(vals[p] + 1) * c.val_dim]);
                tok[f - 1] = 1.0;
            }
            // Q distinct pairs asked about, in random order.
            let mut asked: Vec<usize> = (0..c.pairs).collect();
            for i in 0..c.queries {
                let j = i + below(rng, c.pairs - i);
                asked.swap(i, j);
            }
            for (qi, &p) in asked[..c.queries].iter().enumerate() {
                let row = s * t + c.pairs + qi;
                let tok = &mut x[row * f..(row + 1) * f];
                tok[..c.key_dim].copy_from_slice(&self.key_vecs[keys[p] * c.key_dim..(keys[p] + 1) * c.key_dim]);
                tok[f - 2] = 1.0;
                tok[f - 1] = 1.0;
                queries.push((row, vals[p]));
            }
        }
        Batch { x, queries }
    }
}

/// The trained parameters: `Wq`, `Wk`, `Wv` `[F, H D]`, `Wo` `[H D, n_vals]`, `bo` `[n_vals]`.
#[derive(Clone)]
struct Params {
    w: [Vec<f32>; 5],
}

const NAMES: [&str; 5] = ["Wq", "Wk", "Wv", "Wo", "bo"];

impl Params {
    fn init(cfg: &Config, rng: &mut reference::Rng) -> Self {
        let (f, hd, n) = (cfg.features(), (cfg.heads * cfg.head_dim) as usize, cfg.n_vals);
        let proj = |rng: &mut reference::Rng| rng.normals(f * hd, 1.0 / (f as f32).sqrt());
        let (wq, wk, wv) = (proj(rng), proj(rng), proj(rng));
        let wo = rng.normals(hd * n, 1.0 / (hd as f32).sqrt());
        Params { w: [wq, wk, wv, wo, vec![0.0; n]] }
    }
}

/// The attention the model calls: sbattn on the GPU through buffers made once for one shape,
/// or the f64 reference.
enum Attn<'a> {
    Gpu(Box<GpuAttention<'a>>),
    Reference(Shape),
}

/// GPU buffers of one shape, `[B, T, H, D]` f32 (`Layout::Bthd`), reused by every step.
struct GpuAttention<'a> {
    attn: &'a Attention,
    shape: Shape,
    bytes: u64,
    q: wgpu::Buffer,
    k: wgpu::Buffer,
    v: wgpu::Buffer,
    o: wgpu::Buffer,
    log_rem: wgpu::Buffer,
    d_o: wgpu::Buffer,
    dq: wgpu::Buffer,
    dk: wgpu::Buffer,
    dv: wgpu::Buffer,
}

impl<'a> GpuAttention<'a> {
    fn new(attn: &'a Attention, shape: Shape) -> Result<Self, BoxError> {
        let n = shape.batch() as u64 * shape.seq_len() as u64 * shape.heads() as u64 * shape.head_dim() as u64;
        let bytes = n * 4;
        let buf = |label: &str, bytes: u64| attn.zeroed(label, bytes);
        Ok(GpuAttention {
            attn,
            shape,
            bytes,
            q: buf("q", bytes)?,
            k: buf("k", bytes)?,
            v: buf("v", bytes)?,
            o: buf("o", bytes)?,
            log_rem: buf("log_rem", shape.rows() * 4)?,
            d_o: buf("d_o", bytes)?,
            dq: buf("dq", bytes)?,
            dk: buf("dk", bytes)?,
            dv: buf("dv", bytes)?,
        })
    }

    /// The forward call on these buffers (the backward call is built from it).
    fn call(&self) -> Forward<'_> {
        let t = TensorRef::bthd;
        Forward::new(self.shape, Dtype::F32, t(&self.q), t(&self.k), t(&self.v), t(&self.o))
            .with_mask(MASK)
            .with_remainder(Remainder::Discard)
            .with_log_rem(BufferRef::new(&self.log_rem))
    }

    /// Submits `encoder` and reads back `bufs` (each `self.bytes` of f32).
    fn submit_and_read<const N: usize>(&self, mut encoder: wgpu::CommandEncoder, bufs: [&wgpu::Buffer; N]) -> Result<[Vec<f32>; N], BoxError> {
        let dev = self.attn.device();
        let reads = bufs.map(|b| Readback::record(dev, &mut encoder, b, self.bytes));
        self.attn.queue().submit([encoder.finish()]);
        let mut out = Vec::with_capacity(N);
        for r in reads {
            out.push(from_bytes(&r.read_blocking(dev)?, Dtype::F32));
        }
        Ok(out.try_into().expect("N results"))
    }

    /// `o` of `q`, `k`, `v` (`log rem` saved on the GPU for [`GpuAttention::backward`]).
    fn forward(&self, q: &[f32], k: &[f32], v: &[f32]) -> Result<Vec<f32>, BoxError> {
        let queue = self.attn.queue();
        for (buf, data) in [(&self.q, q), (&self.k, k), (&self.v, v)] {
            queue.write_buffer(buf, 0, &to_bytes(data, Dtype::F32));
        }
        let mut encoder = self.attn.device().create_command_encoder(&Default::default());
        self.attn.forward(&mut encoder, &self.call())?;
        let [o] = self.submit_and_read(encoder, [&self.o])?;
        Ok(o)
    }

    /// `dq`, `dk`, `dv` of the last forward call's inputs for the loss gradient `d_o`.
    fn backward(&self, d_o: &[f32]) -> Result<[Vec<f32>; 3], BoxError> {
        self.attn.queue().write_buffer(&self.d_o, 0, &to_bytes(d_o, Dtype::F32));
        let fwd = self.call();
        let t = TensorRef::bthd;
        let call = Backward::new(&fwd, t(&self.d_o), t(&self.dq), t(&self.dk), t(&self.dv));
        let mut encoder = self.attn.device().create_command_encoder(&Default::default());
        self.attn.backward(&mut encoder, &call)?;
        self.submit_and_read(encoder, [&self.dq, &self.dk, &self.dv])
    }
}

/// The reference's description of the same problem.
fn host_input<'x>(shape: Shape, q: &'x [f32], k: &'x [f32], v: &'x [f32]) -> HostInput<'x> {
    HostInput::new(shape, q, k, v).with_mask(MASK).with_remainder(HostRemainder::Discard)
}

fn narrow(x: &[f64]) -> Vec<f32> {
    x.iter().map(|&x| x as f32).collect()
}

impl Attn<'_> {
    fn shape(&self) -> Shape {
        match self {
            Attn::Gpu(g) => g.shape,
            Attn::Reference(s) => *s,
        }
    }

    fn forward(&self, q: &[f32], k: &[f32], v: &[f32]) -> Result<Vec<f32>, BoxError> {
        match self {
            Attn::Gpu(g) => g.forward(q, k, v),
            Attn::Reference(s) => Ok(narrow(&reference::forward(&host_input(*s, q, k, v))?.o)),
        }
    }

    /// After `forward` on the same `q`, `k`, `v`.
    fn backward(&self, q: &[f32], k: &[f32], v: &[f32], d_o: &[f32]) -> Result<[Vec<f32>; 3], BoxError> {
        match self {
            Attn::Gpu(g) => g.backward(d_o),
            Attn::Reference(s) => {
                let g = reference::backward(&host_input(*s, q, k, v), d_o, None)?;
                Ok([narrow(&g.dq), narrow(&g.dk), narrow(&g.dv)])
            }
        }
    }
}

/// The model's activations on one batch.
struct Pass {
    qkv: [Vec<f32>; 3],
    o: Vec<f32>,
    /// Mean cross-entropy over the batch's queries.
    loss: f64,
    /// Queries answered right.
    correct: usize,
}

/// Forward pass of the whole model.
fn run_model(cfg: &Config, p: &Params, batch: &Batch, attn: &Attn) -> Result<Pass, BoxError> {
    let rows = batch.x.len() / cfg.features();
    let (f, hd) = (cfg.features(), (cfg.heads * cfg.head_dim) as usize);
    let qkv = [0, 1, 2].map(|i| mat::mul(&batch.x, &p.w[i], rows, f, hd));
    let o = attn.forward(&qkv[0], &qkv[1], &qkv[2])?;
    let (loss, correct) = readout(cfg, p, batch, &o, None);
    Ok(Pass { qkv, o, loss, correct })
}

/// Logits at the queries, the mean cross-entropy and the number right; with `grads`, also the
/// gradients of `Wo`, `bo` (added there) and the returned `do` (zero at the pair tokens).
fn readout(cfg: &Config, p: &Params, batch: &Batch, o: &[f32], grads: Option<(&mut [Vec<f32>; 5], &mut Vec<f32>)>) -> (f64, usize) {
    let (hd, n) = ((cfg.heads * cfg.head_dim) as usize, cfg.n_vals);
    let count = batch.queries.len();
    let (mut loss, mut correct) = (0.0f64, 0usize);
    let mut dlogits = vec![0.0f32; count * n];
    let mut o_rows = vec![0.0f32; count * hd];
    for (qi, &(row, answer)) in batch.queries.iter().enumerate() {
        let orow = &o[row * hd..(row + 1) * hd];
        o_rows[qi * hd..(qi + 1) * hd].copy_from_slice(orow);
        let logits: Vec<f64> = (0..n)
            .map(|c| p.w[4][c] as f64 + orow.iter().enumerate().map(|(d, &x)| x as f64 * p.w[3][d * n + c] as f64).sum::<f64>())
            .collect();
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = logits.iter().map(|l| (l - max).exp()).sum();
        loss += z.ln() + max - logits[answer];
        let best = (0..n).max_by(|&a, &b| logits[a].total_cmp(&logits[b])).unwrap_or(0);
        correct += usize::from(best == answer);
        for c in 0..n {
            let prob = (logits[c] - max).exp() / z;
            dlogits[qi * n + c] = ((prob - f64::from(u8::from(c == answer))) / count as f64) as f32;
        }
    }
    if let Some((g, d_o)) = grads {
        g[3] = mat::tmul(&o_rows, &dlogits, count, hd, n);
        g[4] = (0..n).map(|c| (0..count).map(|qi| dlogits[qi * n + c]).sum()).collect();
        let d_rows = mat::mul_t(&dlogits, &p.w[3], count, hd, n);
        d_o.clear();
        d_o.resize(o.len(), 0.0);
        for (qi, &(row, _)) in batch.queries.iter().enumerate() {
            d_o[row * hd..(row + 1) * hd].copy_from_slice(&d_rows[qi * hd..(qi + 1) * hd]);
        }
    }
    (loss / count as f64, correct)
}

/// A forward and backward pass of the model.
struct Step {
    pass: Pass,
    /// Gradients of the parameters, as [`Params::w`].
    grads: [Vec<f32>; 5],
    /// The loss's gradient with respect to the attention's output.
    d_o: Vec<f32>,
    /// The attention's `dq`, `dk`, `dv`.
    dqkv: [Vec<f32>; 3],
}

/// The model's loss and the gradients of every parameter (attention backward through `attn`).
fn gradients(cfg: &Config, p: &Params, batch: &Batch, attn: &Attn) -> Result<Step, BoxError> {
    let pass = run_model(cfg, p, batch, attn)?;
    let mut g: [Vec<f32>; 5] = Default::default();
    let mut d_o = Vec::new();
    readout(cfg, p, batch, &pass.o, Some((&mut g, &mut d_o)));
    let dqkv = attn.backward(&pass.qkv[0], &pass.qkv[1], &pass.qkv[2], &d_o)?;
    let rows = batch.x.len() / cfg.features();
    let (f, hd) = (cfg.features(), (cfg.heads * cfg.head_dim) as usize);
    for i in 0..3 {
        g[i] = mat::tmul(&batch.x, &dqkv[i], rows, f, hd);
    }
    Ok(Step { pass, grads: g, d_o, dqkv })
}

/// Max `|got - want|` over max `|want|`.
fn rel_error(got: &[f32], want: &[f64]) -> f64 {
    let max_ref = want.iter().fold(0.0f64, |m, w| m.max(w.abs()));
    let max_err = got.iter().zip(want).fold(0.0f64, |m, (g, w)| m.max((*g as f64 - w).abs()));
    if max_ref > 0.0 { max_err / max_ref } else { max_err }
}

/// The checks at the start (module documentation); returns the attention and model errors.
fn check(cfg: &Config, p: &Params, batch: &Batch, attn: &Attn, log: &mut dyn FnMut(String)) -> Result<(f64, f64), BoxError> {
    let Step { pass, grads: g, d_o, dqkv } = gradients(cfg, p, batch, attn)?;
    let shape = attn.shape();
    let [q, k, v] = &pass.qkv;
    let input = host_input(shape, q, k, v);
    let want_o = reference::forward(&input)?.o;
    let want = reference::backward(&input, &d_o, None)?;
    let errs = [
        ("o", rel_error(&pass.o, &want_o)),
        ("dq", rel_error(&dqkv[0], &want.dq)),
        ("dk", rel_error(&dqkv[1], &want.dk)),
        ("dv", rel_error(&dqkv[2], &want.dv)),
    ];
    let attention_error = errs.iter().fold(0.0f64, |m, e| m.max(e.1));
    let list: Vec<String> = errs.iter().map(|(n, e)| format!("{n} {e:.1e}")).collect();
    log(format!("check 1/2, attention vs sbattn::reference (f64), max |err| / max |ref|: {}", list.join(", ")));

    // Central differences of the whole loss (reference attention, f64) at a few entries of each
    // parameter, against the gradients just computed.
    let ref_attn = Attn::Reference(shape);
    let mut rng = reference::Rng::new(cfg.seed ^ 0xD1FF);
    let mut model_err = 0.0f64;
    let mut list = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        let mut worst = 0.0f64;
        for _ in 0..3 {
            let at = (rng.next_u64() % p.w[i].len() as u64) as usize;
            let h = 1e-2f32;
            let mut plus = p.clone();
            plus.w[i][at] += h;
            let mut minus = p.clone();
            minus.w[i][at] -= h;
            let lp = run_model(cfg, &plus, batch, &ref_attn)?.loss;
            let lm = run_model(cfg, &minus, batch, &ref_attn)?.loss;
            let fd = (lp - lm) / (2.0 * h as f64);
            let an = g[i][at] as f64;
            // Relative to the gradient's size over the whole matrix, so tiny entries do not
            // blow up the ratio.
            let scale = g[i].iter().fold(0.0f64, |m, x| m.max(x.abs() as f64)).max(1e-6);
            worst = worst.max((fd - an).abs() / scale);
        }
        model_err = model_err.max(worst);
        list.push(format!("{name} {worst:.1e}"));
    }
    log(format!("check 2/2, parameter gradients vs finite differences, max |err| / max |grad|: {}", list.join(", ")));
    Ok((attention_error, model_err))
}

/// Trains from scratch with `cfg` (attention on `attn`'s GPU, or the reference when
/// `cfg.reference`); `log` gets every printed line.
pub fn train(attn: Option<&Attention>, cfg: &Config, log: &mut dyn FnMut(String)) -> Result<Outcome, BoxError> {
    let t = cfg.seq_len() as u32;
    let shape = |b: u32| Shape::new().with_batch(b).with_seq_len(t).with_heads(cfg.heads).with_head_dim(cfg.head_dim);
    let make = |b: u32| -> Result<Attn, BoxError> {
        Ok(match (cfg.reference, attn) {
            (true, _) => Attn::Reference(shape(b)),
            (false, Some(a)) => Attn::Gpu(Box::new(GpuAttention::new(a, shape(b))?)),
            (false, None) => return Err("no GPU given (use --reference for the CPU)".into()),
        })
    };
    let (train_attn, eval_attn) = (make(cfg.batch)?, make(cfg.eval_batch)?);

    let mut rng = reference::Rng::new(cfg.seed);
    let task = Task::new(cfg, &mut rng);
    let mut params = Params::init(cfg, &mut rng);
    let held_out = task.batch(&mut reference::Rng::new(cfg.seed.wrapping_add(0x5EED)), cfg.eval_batch as usize);
    log(format!(
        "task: {} pairs + {} queries (T {t}), {} keys, {} values (chance {:.1}%); model: {} heads x {}, {} features; batch {}, {}",
        cfg.pairs,
        cfg.queries,
        cfg.n_keys,
        cfg.n_vals,
        100.0 / cfg.n_vals as f64,
        cfg.heads,
        cfg.head_dim,
        cfg.features(),
        cfg.batch,
        if cfg.reference { "attention: f64 reference on the CPU".to_string() } else { "attention: sbattn on the GPU".to_string() },
    ));
    log(format!("SGD with momentum {} at lr {}; stop at {:.0}% held-out recall or {} steps", cfg.momentum, cfg.lr, cfg.target * 100.0, cfg.steps));

    let first = task.batch(&mut rng, cfg.batch as usize);
    let started = Instant::now();
    let (attention_error, model_grad_error) = check(cfg, &params, &first, &train_attn, log)?;
    log(format!("checks took {:.1} s (kernel compilation included)", started.elapsed().as_secs_f64()));
    if attention_error > ATTENTION_TOL || model_grad_error > MODEL_GRAD_TOL {
        return Err(format!(
            "gradient check failed: attention {attention_error:.1e} (bound {ATTENTION_TOL:.0e}), model {model_grad_error:.1e} (bound {MODEL_GRAD_TOL:.0e})"
        )
        .into());
    }

    let started = Instant::now();
    let mut vel: [Vec<f32>; 5] = params.w.clone().map(|w| vec![0.0; w.len()]);
    let (mut sum, mut count) = (0.0f64, 0usize);
    let mut curve = Vec::new();
    let mut accuracy = 0.0;
    let mut batch = first;
    let mut steps = 0;
    for step in 1..=cfg.steps {
        let Step { pass, grads: g, .. } = gradients(cfg, &params, &batch, &train_attn)?;
        if !pass.loss.is_finite() {
            return Err(format!("step {step}: the loss is {}", pass.loss).into());
        }
        for ((w, v), g) in params.w.iter_mut().zip(&mut vel).zip(&g) {
            for ((w, v), g) in w.iter_mut().zip(v.iter_mut()).zip(g) {
                *v = cfg.momentum * *v + g;
                *w -= cfg.lr * *v;
            }
        }
        sum += pass.loss;
        count += 1;
        steps = step;
        if step % cfg.every == 0 || step == cfg.steps {
            let eval = run_model(cfg, &params, &held_out, &eval_attn)?;
            accuracy = eval.correct as f64 / held_out.queries.len() as f64;
            let mean = sum / count as f64;
            curve.push((step, mean, accuracy));
            log(format!(
                "step {step:5}  loss {mean:.4}  held-out loss {:.4}  recall {:5.1}%  ({:.1} s)",
                eval.loss,
                accuracy * 100.0,
                started.elapsed().as_secs_f64()
            ));
            (sum, count) = (0.0, 0);
            if accuracy >= cfg.target {
                break;
            }
        }
        batch = task.batch(&mut rng, cfg.batch as usize);
    }
    let seconds = started.elapsed().as_secs_f64();
    let reached = accuracy >= cfg.target;
    log(format!(
        "{}: held-out recall {:.1}% after {steps} steps in {seconds:.1} s ({:.1} ms/step; target {:.0}%)",
        if reached { "reached" } else { "NOT reached" },
        accuracy * 100.0,
        seconds * 1e3 / steps.max(1) as f64,
        cfg.target * 100.0
    ));
    Ok(Outcome { steps, accuracy, reached, curve, attention_error, model_grad_error, seconds })
}

/// Bound of the first start check: f32 attention on the GPU against f64, max error over max
/// magnitude (measured on lavapipe: 2e-7 to 1.2e-6).
pub const ATTENTION_TOL: f64 = 1e-4;
/// Bound of the second: central differences with step 1e-2 (truncation error `O(h^2)`),
/// error over the largest entry of the gradient (measured: at most 5e-5).
pub const MODEL_GRAD_TOL: f64 = 1e-3;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return;
    }
    let cfg = match Config::from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let result = (|| -> Result<Outcome, BoxError> {
        let attn = if cfg.reference { None } else { Some(Attention::with_default_adapter_blocking()?) };
        if let Some(a) = &attn {
            let caps = a.capabilities();
            println!("adapter: {} ({:?}, {})", caps.name, caps.backend, caps.driver);
        }
        train(attn.as_ref(), &cfg, &mut |line| println!("{line}"))
    })();
    match result {
        Ok(out) if out.reached => {}
        Ok(_) => std::process::exit(1),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
