//! The command line (clap derive), and what each `--profile` sets. Parsing never touches a GPU,
//! so `cli/tests/args.rs` tests all of it.

use std::path::PathBuf;
use std::str::FromStr;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use sbattn::{Dtype, KernelPath, ShaderChecks, Shape};

use crate::timer::Sampling;

/// Stick-breaking attention (sbattn) on this machine's GPUs.
///
/// The adapter is the library's default choice (discrete, then integrated, then others);
/// wgpu's WGPU_BACKEND and WGPU_ADAPTER_NAME environment variables narrow it.
///
/// An option given twice keeps its last value (lists too: `ArgAction::Set`), so that options
/// appended to a command line (scripts/device-bench.sh's EXTRA) override the ones before.
#[derive(Parser, Debug)]
#[command(
    name = "sbattn",
    version,
    propagate_version = true,
    args_override_self = true
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Compile every kernel from scratch: neither read nor write the persistent pipeline cache
    /// (also SBATTN_NO_PIPELINE_CACHE=1).
    #[arg(long, global = true)]
    pub no_pipeline_cache: bool,
    /// Folder of the persistent pipeline cache [default: SBATTN_PIPELINE_CACHE_DIR, else
    /// sbattn/ in the user's cache folder: $XDG_CACHE_HOME or ~/.cache].
    #[arg(long, global = true, value_name = "DIR")]
    pub pipeline_cache_dir: Option<PathBuf>,
}

/// The subcommands.
// Parsed once per run: the size of the benchmark variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Every adapter wgpu finds: features, limits, and the kernels sbattn would run on it.
    Info,
    /// Every kernel path against the f64 reference: odd shapes, GQA/MQA, both dtypes, every mask
    /// and remainder mode, and decode steps; exits non-zero on any failure.
    Check(CheckArgs),
    /// Benchmarks (markdown table on stdout; --json, --plot).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Draws a PNG from saved `bench forward --json` or `bench decode --json` files (and
    /// baselines) without running anything.
    Plot(PlotArgs),
    /// Draws the attention weights of one head, computed on the GPU: stick-breaking next to
    /// softmax on the same q and k, with the remainder per row and a colour scale.
    Heatmap(HeatmapArgs),
}

/// `sbattn bench ...`.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// The forward (prefill) kernel over shapes, paths, dtypes, early-exit thresholds and inputs.
    Forward(ForwardArgs),
    /// Decode steps against a KV cache, with the read-bandwidth ceilings of the same device.
    Decode(DecodeArgs),
    /// A training step's attention: forward (saving log rem), backward, and both, per path.
    Backward(BackwardArgs),
    /// Prefill as an engine runs it: one call, chunks on a contiguous or paged cache, packed
    /// variable-length batches next to padded ones.
    Prefill(PrefillArgs),
}

/// `sbattn bench backward`.
#[derive(Args, Debug, Clone)]
#[command(args_override_self = true)]
pub struct BackwardArgs {
    /// Shapes BxHxTxD (H may be H/Hkv) [default: 4x12x4096x128,1x32x4096x64; ci and quick:
    /// 1x2x256x64].
    #[arg(long, value_delimiter = ',', action = ArgAction::Set, value_parser = parse_forward_shape, value_name = "BxHxTxD")]
    pub shapes: Vec<Shape>,
    /// Forward paths (`coop`: the backward then runs on the automatic path).
    #[arg(long, value_enum, value_delimiter = ',', action = ArgAction::Set, default_value = "all")]
    pub paths: Vec<PathArg>,
    /// Storage types.
    #[arg(long, value_enum, value_delimiter = ',', action = ArgAction::Set, default_value = "f16")]
    pub dtypes: Vec<DtypeArg>,
    #[command(flatten)]
    pub bench: BenchArgs,
}

impl BackwardArgs {
    /// The shapes to run: `--shapes`, else the profile's.
    pub fn shapes(&self) -> Vec<Shape> {
        if !self.shapes.is_empty() {
            return self.shapes.clone();
        }
        let list: &[&str] = match self.bench.profile {
            Profile::Default => &["4x12x4096x128", "1x32x4096x64"],
            _ => &["1x2x256x64"],
        };
        list.iter().filter_map(|s| parse_forward_shape(s).ok()).collect()
    }
}

/// `sbattn bench prefill`.
#[derive(Args, Debug, Clone)]
#[command(args_override_self = true)]
pub struct PrefillArgs {
    /// Sequences of the one-call and chunked prefill.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub sequences: u32,
    /// Prompt tokens per sequence (0: only --varlen).
    #[arg(long, default_value_t = 4096)]
    pub len: u32,
    /// Chunk sizes of the chunked prefill (each must divide --len).
    #[arg(long, value_delimiter = ',', action = ArgAction::Set, default_value = "512")]
    pub chunks: Vec<u32>,
    /// Page sizes of the paged caches (each chunking also runs on a contiguous cache).
    #[arg(long, value_delimiter = ',', action = ArgAction::Set, default_value = "16,128")]
    pub page_sizes: Vec<u32>,
    /// Lengths of a packed batch, run packed and padded to the longest (empty: none).
    #[arg(long, value_delimiter = ',', action = ArgAction::Set, default_value = "4096,2048,1024,512,256,128,64,32")]
    pub varlen: Vec<u32>,
    /// Query heads.
    #[arg(long, default_value_t = 32)]
    pub heads: u32,
    /// Key/value heads.
    #[arg(long, default_value_t = 8)]
    pub kv_heads: u32,
    /// Head dim.
    #[arg(long, default_value_t = 128)]
    pub head_dim: u32,
    /// Storage type.
    #[arg(long, value_enum, default_value_t = DtypeArg::F16)]
    pub dtype: DtypeArg,
    #[command(flatten)]
    pub bench: BenchArgs,
}

/// `sbattn check`.
#[derive(Args, Debug, Clone)]
#[command(args_override_self = true)]
pub struct CheckArgs {
    /// About 30 small cases (well under 2 minutes on lavapipe) instead of the full sweep.
    #[arg(long)]
    pub quick: bool,
    /// Seed of the inputs.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Shape sets and default sample counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Profile {
    /// The full sweep (what BENCHMARKS.md reports).
    Default,
    /// Two tiny shapes, few samples: CI keeps the tool working.
    Ci,
    /// A few small configurations: a smoke test.
    Quick,
}

impl Profile {
    /// `(iters, warmup, batch)` unless given: timed samples, untimed calls first, calls per
    /// sample (0: enough for `--sample-ms`).
    pub fn sample_counts(self) -> (u32, u32, u32) {
        match self {
            Profile::Default => (10, 3, 0),
            Profile::Quick => (5, 2, 0),
            Profile::Ci => (3, 1, 2),
        }
    }

    /// The forward shapes of this profile.
    pub fn forward_shapes(self) -> Vec<Shape> {
        let list: &[&str] = match self {
            Profile::Default => &[
                "4x12x1024x128",
                "4x12x2048x128",
                "4x12x4096x128",
                "4x12x8192x128",
                "8x32x4096x128",
                "1x32x4096x64",
            ],
            Profile::Quick => &["1x2x256x64", "1x2x512x128"],
            Profile::Ci => &["1x2x64x64", "1x2x128x64"],
        };
        list.iter()
            .map(|s| parse_forward_shape(s).expect("built-in shapes are valid"))
            .collect()
    }

    /// The decode batch sizes and cache lengths of this profile.
    pub fn decode_sweep(self) -> (Vec<u32>, Vec<u32>) {
        match self {
            Profile::Default => (vec![1, 8, 32], vec![4096, 32768, 131072]),
            Profile::Quick => (vec![1, 2], vec![64, 500]),
            Profile::Ci => (vec![1], vec![64, 256]),
        }
    }

    /// Bytes of the read-bandwidth probe and the copy.
    pub fn probe_bytes(self) -> u64 {
        match self {
            Profile::Default => 1 << 30,
            Profile::Quick | Profile::Ci => 16 << 20,
        }
    }
}

/// Storage type (`--dtypes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DtypeArg {
    /// 16-bit floats (needs SHADER_F16).
    F16,
    /// 32-bit floats.
    F32,
}

impl DtypeArg {
    /// The library's type.
    pub fn dtype(self) -> Dtype {
        match self {
            DtypeArg::F16 => Dtype::F16,
            DtypeArg::F32 => Dtype::F32,
        }
    }
}

/// Kernel path (`--paths`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PathArg {
    /// Every explicit path (forward: subgroup, shared, coop; decode: subgroup, shared).
    All,
    /// The library's choice.
    Auto,
    /// Subgroup shuffles.
    Subgroup,
    /// Workgroup shared memory (runs everywhere).
    Shared,
    /// Cooperative matrices (tensor cores; forward only).
    Coop,
    /// The cooperative-matrix kernel with its matrix operations emulated in plain WGSL (forward
    /// only; slow, for tests; not part of `all`).
    CoopEmu,
}

impl PathArg {
    /// The paths this name stands for; `coop` is left out of `all` when `with_coop` is false
    /// (decode has no tensor-core kernel).
    pub fn expand(self, with_coop: bool) -> Vec<KernelPath> {
        match self {
            PathArg::All if with_coop => vec![
                KernelPath::Subgroup,
                KernelPath::SharedMemory,
                KernelPath::CooperativeMatrix,
            ],
            PathArg::All => vec![KernelPath::Subgroup, KernelPath::SharedMemory],
            PathArg::Auto => vec![KernelPath::Auto],
            PathArg::Subgroup => vec![KernelPath::Subgroup],
            PathArg::Shared => vec![KernelPath::SharedMemory],
            PathArg::Coop => vec![KernelPath::CooperativeMatrix],
            PathArg::CoopEmu => vec![KernelPath::EmulatedCooperativeMatrix],
        }
    }
}

/// A list of path names, expanded and without repeats, in the order given.
pub fn expand_paths(list: &[PathArg], with_coop: bool) -> Vec<KernelPath> {
    let mut out: Vec<KernelPath> = Vec::new();
    for p in list.iter().flat_map(|p| p.expand(with_coop)) {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// wgpu's runtime checks of the shaders (`--checks`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ChecksArg {
    /// The library's default (`ShaderChecks::Trusted`): index clamping, no loop bounding, except
    /// in the kernels whose indices are in range by construction.
    Default,
    /// Index clamping in every kernel, no loop bounding (`Attention::with_index_clamping`).
    #[value(alias = "bounds")]
    Clamped,
    /// Index clamping and loop bounding (`Attention::with_full_runtime_checks`).
    Full,
    /// None (the unsafe `Attention::without_runtime_checks`; every call is still validated on
    /// the host).
    #[value(alias = "off")]
    Unchecked,
}

impl ChecksArg {
    /// The library's setting.
    pub fn checks(self) -> ShaderChecks {
        match self {
            ChecksArg::Default => ShaderChecks::Trusted,
            ChecksArg::Clamped => ShaderChecks::Bounds,
            ChecksArg::Full => ShaderChecks::Full,
            ChecksArg::Unchecked => ShaderChecks::Off,
        }
    }
}

/// `--timer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TimerChoice {
    /// GPU timestamps where the device has TIMESTAMP_QUERY and TIMESTAMP_QUERY_INSIDE_ENCODERS,
    /// else wall time.
    Auto,
    /// GPU timestamps (an error where the device lacks them).
    Timestamp,
    /// Submit-to-completion wall time on the host (an upper bound).
    Wall,
}

/// Input generator of the forward benchmark (`--inputs`; cli/README.md says what each gives).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ValueEnum)]
pub enum Inputs {
    /// q, k, v ~ N(0, 1): the stick is spent after a few dozen keys.
    Random,
    /// Logits ~ N(-8, 0.7^2): every key takes little stick, so every key matters.
    LongRange,
}

impl Inputs {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Inputs::Random => "random",
            Inputs::LongRange => "long-range",
        }
    }
}

/// A value or `auto` (the library's choice).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Auto<T> {
    /// The library chooses.
    Auto,
    /// Forced.
    Fixed(T),
}

impl<T: Copy> Auto<T> {
    /// `None` for `auto`.
    pub fn get(self) -> Option<T> {
        match self {
            Auto::Auto => None,
            Auto::Fixed(x) => Some(x),
        }
    }
}

impl<T: std::fmt::Display> std::fmt::Display for Auto<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auto::Auto => f.write_str("auto"),
            Auto::Fixed(x) => x.fmt(f),
        }
    }
}

impl FromStr for Auto<u32> {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Auto::Auto),
            _ => s
                .parse()
                .map(Auto::Fixed)
                .map_err(|_| format!("`{s}` is not `auto` or a whole number")),
        }
    }
}

/// Bytes per cache load forced by `--vec`: `scalar` (one element), or 8 or 16 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VecLoad {
    /// One element per load.
    Scalar,
    /// This many bytes per load.
    Bytes(u32),
}

impl std::fmt::Display for VecLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VecLoad::Scalar => f.write_str("scalar"),
            VecLoad::Bytes(b) => write!(f, "{b}B"),
        }
    }
}

/// `auto`, `scalar`, or bytes per load (`8`, `16`).
pub fn parse_vec(s: &str) -> Result<Auto<VecLoad>, String> {
    match s {
        "auto" => Ok(Auto::Auto),
        "scalar" => Ok(Auto::Fixed(VecLoad::Scalar)),
        _ => match s.trim_end_matches('B').parse::<u32>() {
            Ok(b @ (8 | 16)) => Ok(Auto::Fixed(VecLoad::Bytes(b))),
            _ => Err(format!("`{s}` is not auto, scalar, 8 or 16")),
        },
    }
}

/// `auto` or a whole number.
pub fn parse_auto(s: &str) -> Result<Auto<u32>, String> {
    s.parse()
}

/// `BxHxTxD`, the query heads optionally `H/Hkv` for grouped-query attention
/// (`8x32/8x4096x128`).
pub fn parse_forward_shape(s: &str) -> Result<Shape, String> {
    let parts: Vec<&str> = s.split('x').collect();
    if parts.len() != 4 {
        return Err(format!("shape `{s}` is not BxHxTxD (H may be H/Hkv)"));
    }
    let num = |p: &str| {
        p.parse::<u32>()
            .map_err(|_| format!("shape `{s}`: `{p}` is not a whole number"))
    };
    let (heads, kv_heads) = match parts[1].split_once('/') {
        Some((h, k)) => (num(h)?, Some(num(k)?)),
        None => (num(parts[1])?, None),
    };
    let mut shape = Shape::new()
        .with_batch(num(parts[0])?)
        .with_heads(heads)
        .with_seq_len(num(parts[2])?)
        .with_head_dim(num(parts[3])?);
    if let Some(k) = kv_heads {
        shape = shape.with_kv_heads(k);
    }
    shape.validate().map_err(|e| format!("shape `{s}`: {e}"))?;
    Ok(shape)
}

/// `BxL`: batch size and cache length of a decode step.
pub fn parse_decode_shape(s: &str) -> Result<(u32, u32), String> {
    let (b, l) = s
        .split_once('x')
        .ok_or_else(|| format!("`{s}` is not BxL"))?;
    match (b.parse::<u32>(), l.parse::<u32>()) {
        (Ok(b), Ok(l)) if b > 0 && l > 0 => Ok((b, l)),
        _ => Err(format!("`{s}` is not BxL with positive whole numbers")),
    }
}

/// An early-exit threshold in `[0, 1)`.
pub fn parse_eps(s: &str) -> Result<f32, String> {
    s.parse::<f32>()
        .ok()
        .filter(|e| e.is_finite() && (0.0..1.0).contains(e))
        .ok_or_else(|| format!("`{s}` is not a number in [0, 1)"))
}

/// A positive number of seconds or milliseconds.
fn parse_positive(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && *x > 0.0)
        .ok_or_else(|| format!("`{s}` is not a positive number"))
}

/// What both benchmarks share: sampling, timer, runtime checks, seed and outputs.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Shape set and default sample counts.
    #[arg(long, value_enum, default_value_t = Profile::Default)]
    pub profile: Profile,
    /// Timed samples per configuration [default: 10; ci 3, quick 5].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=2048))]
    pub iters: Option<u32>,
    /// Untimed calls before timing, after the pipelines are compiled [default: 3; ci 1, quick 2].
    #[arg(long)]
    pub warmup: Option<u32>,
    /// Calls per timed sample; 0 = enough for --sample-ms [default: 0; ci 2].
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub batch: Option<u32>,
    /// Target length of one sample with --batch 0, in milliseconds.
    #[arg(long, default_value_t = 10.0, value_parser = parse_positive)]
    pub sample_ms: f64,
    /// Seconds of timing per configuration: fewer samples (not under 3) when the estimate is over.
    #[arg(long, default_value_t = 10.0, value_parser = parse_positive)]
    pub time_limit: f64,
    /// Timer.
    #[arg(long, value_enum, default_value_t = TimerChoice::Auto)]
    pub timer: TimerChoice,
    /// wgpu runtime checks of the shaders, a list: each gets its own context.
    #[arg(long, value_enum, value_delimiter = ',', action = ArgAction::Set, default_value = "default")]
    pub checks: Vec<ChecksArg>,
    /// Seed of the inputs.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write every result as JSON here (rewritten after each configuration).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Draw time and throughput against the sequence (cache) length into this PNG.
    #[arg(long, value_name = "FILE.png")]
    pub plot: Option<PathBuf>,
    /// Baselines to draw on the plot (the JSON of scripts/torch_baselines.py or
    /// scripts/bench_decode.py; cli/README.md gives the format).
    #[arg(long, value_name = "FILE", requires = "plot")]
    pub baselines: Option<PathBuf>,
}

impl BenchArgs {
    /// The sampling settings, the profile's counts where none were given.
    pub fn sampling(&self) -> Sampling {
        let (iters, warmup, batch) = self.profile.sample_counts();
        Sampling {
            iters: self.iters.unwrap_or(iters),
            warmup: self.warmup.unwrap_or(warmup),
            batch: self.batch.unwrap_or(batch),
            sample_ms: self.sample_ms,
            time_limit_s: self.time_limit,
        }
    }

    /// The runtime-check settings, without repeats.
    pub fn checks(&self) -> Vec<ShaderChecks> {
        let mut out = Vec::new();
        for c in self.checks.iter().map(|c| c.checks()) {
            if !out.contains(&c) {
                out.push(c);
            }
        }
        out
    }
}

/// `sbattn bench forward`.
#[derive(Args, Debug, Clone)]
#[command(args_override_self = true)]
pub struct ForwardArgs {
    /// Shapes BxHxTxD (H may be H/Hkv) instead of the profile's; default profile: B4 H12 D128 T
    /// 1024..8192, 8x32x4096x128, 1x32x4096x64; quick: 1x2x256x64, 1x2x512x128; ci: 1x2x64x64,
    /// 1x2x128x64.
    #[arg(long, value_delimiter = ',', action = ArgAction::Set, value_parser = parse_forward_shape, value_name = "BxHxTxD")]
    pub shapes: Vec<Shape>,
    /// Kernel paths; those the device cannot run are skipped (and said why).
    #[arg(long, value_enum, value_delimiter = ',', action = ArgAction::Set, default_value = "all")]
    pub paths: Vec<PathArg>,
    /// Storage types.
    #[arg(long, value_enum, value_delimiter = ',', action = ArgAction::Set, default_value = "f16,f32")]
    pub dtypes: Vec<DtypeArg>,
    /// Early-exit thresholds, 0 = off.
    #[arg(long, value_delimiter = ',', action = ArgAction::Set, default_value = "0", value_parser = parse_eps)]
    pub eps: Vec<f32>,
    /// Input generators.
    #[arg(long, value_enum, value_delimiter = ',', action = ArgAction::Set, default_value = "random")]
    pub inputs: Vec<Inputs>,
    /// Keys per tile of the cooperative-matrix kernel (ForwardTuning::coop_block_n): auto, 32, 64.
    /// Only the coop path takes it.
    #[arg(long, value_delimiter = ',', action = ArgAction::Set, default_value = "auto", value_parser = parse_auto)]
    pub coop_block_n: Vec<Auto<u32>>,
    /// Forward tunings to measure (ForwardTuning::parse): `auto`, or parts joined by `+`
    /// (bn32, bn64, pf, nopf, qs, noqs, hi, nohi, sp, nosp), e.g. `auto,qs+bn32,hi`. Each is combined with
    /// each --coop-block-n; the coop-only parts apply to the coop path.
    #[arg(long, value_delimiter = ',', action = ArgAction::Set, default_value = "auto", value_parser = parse_tuning)]
    pub tuning: Vec<sbattn::ForwardTuning>,
    /// Input sets the calls rotate through (never one tiny input).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(2..=64))]
    pub sets: u32,
    /// Sequence length of the correctness check run with each configuration, 0 = none.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(0..=65536))]
    pub check_t: u32,
    /// Shared benchmark options.
    #[command(flatten)]
    pub bench: BenchArgs,
}

impl ForwardArgs {
    /// The shapes to run: `--shapes`, else the profile's.
    pub fn shapes(&self) -> Vec<Shape> {
        if self.shapes.is_empty() {
            self.bench.profile.forward_shapes()
        } else {
            self.shapes.clone()
        }
    }
}

/// `sbattn bench decode`.
#[derive(Args, Debug, Clone)]
#[command(args_override_self = true)]
pub struct DecodeArgs {
    /// BxL pairs (batch size x cache length) instead of --batch-sizes x --lengths.
    #[arg(long, value_delimiter = ',', action = ArgAction::Set, value_parser = parse_decode_shape, value_name = "BxL")]
    pub shapes: Vec<(u32, u32)>,
    /// Batch sizes [default: 1,8,32; quick 1,2; ci 1].
    #[arg(long, value_delimiter = ',', action = ArgAction::Set, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_sizes: Vec<u32>,
    /// Cache lengths [default: 4096,32768,131072; quick 64,500; ci 64,256].
    #[arg(long, value_delimiter = ',', action = ArgAction::Set, value_parser = clap::value_parser!(u32).range(1..))]
    pub lengths: Vec<u32>,
    /// Query heads.
    #[arg(long, default_value_t = 32)]
    pub heads: u32,
    /// Key/value heads.
    #[arg(long, default_value_t = 8)]
    pub kv_heads: u32,
    /// Head dim.
    #[arg(long, default_value_t = 128)]
    pub head_dim: u32,
    /// Storage types [default: f16 where the device has it, else f32].
    #[arg(long, value_enum, value_delimiter = ',', action = ArgAction::Set)]
    pub dtypes: Vec<DtypeArg>,
    /// Lane-reduction paths (coop is an error: decode has no tensor-core kernel).
    #[arg(long, value_enum, value_delimiter = ',', action = ArgAction::Set, default_value = "auto")]
    pub paths: Vec<PathArg>,
    /// Lanes per key (DecodeTuning::lanes): auto, 8, 16, 32, 64.
    #[arg(long, value_delimiter = ',', action = ArgAction::Set, default_value = "auto", value_parser = parse_auto)]
    pub lanes: Vec<Auto<u32>>,
    /// Bytes per cache load (DecodeTuning::load): auto, scalar, 8, 16.
    #[arg(long, value_delimiter = ',', action = ArgAction::Set, default_value = "auto", value_parser = parse_vec)]
    pub vec: Vec<Auto<VecLoad>>,
    /// Keys per step (DecodeTuning::keys_per_step): auto, 1, 2, 4, 8.
    #[arg(long, value_delimiter = ',', action = ArgAction::Set, default_value = "auto", value_parser = parse_auto)]
    pub keys: Vec<Auto<u32>>,
    /// Chunks per sequence (DecodeTuning::splits): auto or 1..=4096.
    #[arg(long, value_delimiter = ',', action = ArgAction::Set, default_value = "auto", value_parser = parse_auto)]
    pub splits: Vec<Auto<u32>>,
    /// A reference bandwidth in GB/s (such as PyTorch's copy) for the %ref column.
    #[arg(long, value_parser = parse_positive)]
    pub ref_gbps: Option<f64>,
    /// Zeroed caches instead of random values (timing does not depend on them: every key is read).
    #[arg(long)]
    pub zeros: bool,
    /// Steps rotate over copies of the caches until they pass this many MiB (several times a
    /// large GPU's L2), as a model's layers do.
    #[arg(long, default_value_t = 256)]
    pub rotate_mb: u64,
    /// MiB read by the bandwidth probe and the copy [default: 1024; quick and ci 16]; 0 = no probe.
    #[arg(long)]
    pub probe_mb: Option<u64>,
    /// Cache length of the correctness check run with each configuration, 0 = none.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(0..=65536))]
    pub check_len: u32,
    /// Run on a paged cache with pages of this many tokens (a power of two, 16 to 256), each
    /// sequence's pages shuffled over the pool; default: a contiguous cache.
    #[arg(long)]
    pub page_size: Option<u32>,
    /// Shared benchmark options.
    #[command(flatten)]
    pub bench: BenchArgs,
}

impl DecodeArgs {
    /// The (batch, cache length) pairs to run: `--shapes`, else the product of the batch sizes
    /// and lengths (each list the profile's unless given).
    pub fn shapes(&self) -> Vec<(u32, u32)> {
        if !self.shapes.is_empty() {
            return self.shapes.clone();
        }
        let (b, l) = self.bench.profile.decode_sweep();
        let batches = if self.batch_sizes.is_empty() {
            b
        } else {
            self.batch_sizes.clone()
        };
        let lengths = if self.lengths.is_empty() {
            l
        } else {
            self.lengths.clone()
        };
        batches
            .iter()
            .flat_map(|&b| lengths.iter().map(move |&l| (b, l)))
            .collect()
    }

    /// Bytes of the probe and copy buffers (0: none).
    pub fn probe_bytes(&self) -> u64 {
        self.probe_mb
            .map_or(self.bench.profile.probe_bytes(), |mb| mb << 20)
    }
}

/// Which panels `sbattn plot` draws (`--panels`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PanelsArg {
    /// Time per call and throughput side by side.
    Both,
    /// Time per call (ms) only.
    Time,
    /// Throughput (TFLOP/s or GB/s) only.
    Rate,
}

/// `BxHxD` (H may be H/Hkv): the sizes fixed along one line of a plot.
pub fn parse_family(s: &str) -> Result<(u32, u32, u32, u32), String> {
    let parts: Vec<&str> = s.split('x').collect();
    let num = |p: &str| {
        p.parse::<u32>()
            .ok()
            .filter(|x| *x > 0)
            .ok_or_else(|| format!("`{s}`: `{p}` is not a positive whole number"))
    };
    if parts.len() != 3 {
        return Err(format!("`{s}` is not BxHxD (H may be H/Hkv)"));
    }
    let (h, hkv) = match parts[1].split_once('/') {
        Some((h, k)) => (num(h)?, num(k)?),
        None => (num(parts[1])?, num(parts[1])?),
    };
    Ok((num(parts[0])?, h, hkv, num(parts[2])?))
}

/// `sbattn plot`.
#[derive(Args, Debug, Clone)]
#[command(args_override_self = true)]
pub struct PlotArgs {
    /// JSON files of `sbattn bench forward --json` or `sbattn bench decode --json` (all of one kind).
    #[arg(required = true, value_name = "JSON")]
    pub files: Vec<PathBuf>,
    /// The PNG to write.
    #[arg(long, value_name = "FILE.png")]
    pub out: PathBuf,
    /// A name per JSON file, in the order of the files (repeat the option), said in parentheses
    /// after each of the file's lines: `--label "v3, 22:06" --label "v4, 22:48"`.
    #[arg(long = "label", value_name = "TEXT", action = ArgAction::Append)]
    pub labels: Vec<String>,
    /// Baselines to draw (the JSON of scripts/torch_baselines.py or scripts/bench_decode.py;
    /// repeat for several files).
    #[arg(long, value_name = "FILE", action = ArgAction::Append)]
    pub baselines: Vec<PathBuf>,
    /// Only these baselines: an implementation (`sdpa`) or an implementation and dtype
    /// (`sdpa bf16`), as the legend names them [default: all].
    #[arg(long, value_delimiter = ',', action = ArgAction::Set, value_name = "IMPL[ DTYPE]")]
    pub baseline_only: Vec<String>,
    /// Only these sizes, BxHxD (H may be H/Hkv): `4x12x128` [default: all].
    #[arg(long, value_delimiter = ',', action = ArgAction::Set, value_parser = parse_family, value_name = "BxHxD")]
    pub family: Vec<(u32, u32, u32, u32)>,
    /// Only results measured with these runtime checks [default: all].
    #[arg(long, value_enum, value_delimiter = ',', action = ArgAction::Set)]
    pub checks: Vec<ChecksArg>,
    /// Only these storage types [default: all].
    #[arg(long, value_enum, value_delimiter = ',', action = ArgAction::Set)]
    pub dtypes: Vec<DtypeArg>,
    /// Which panels to draw.
    #[arg(long, value_enum, default_value_t = PanelsArg::Both)]
    pub panels: PanelsArg,
    /// Leave out the read-bandwidth probe lines of decode files.
    #[arg(long)]
    pub no_probe: bool,
    /// The title [default: the benchmark, the adapter and the dates of the files].
    #[arg(long)]
    pub title: Option<String>,
}

/// Which keys a query sees (`--mask`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MaskArg {
    /// Keys before the query (j < i), the library's default.
    Strict,
    /// Keys up to the query itself (j <= i).
    IncludeCurrent,
}

impl MaskArg {
    /// The library's mask.
    pub fn mask(self) -> sbattn::Mask {
        match self {
            MaskArg::Strict => sbattn::Mask::Strict,
            MaskArg::IncludeCurrent => sbattn::Mask::IncludeCurrent,
        }
    }
}

/// A finite number.
fn parse_finite(s: &str) -> Result<f32, String> {
    s.parse::<f32>()
        .ok()
        .filter(|x| x.is_finite())
        .ok_or_else(|| format!("`{s}` is not a finite number"))
}

/// A number in (0, 1).
fn parse_floor(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|x| *x > 0.0 && *x < 1.0)
        .ok_or_else(|| format!("`{s}` is not a number in (0, 1)"))
}

/// `sbattn heatmap`.
#[derive(Args, Debug, Clone)]
#[command(args_override_self = true)]
pub struct HeatmapArgs {
    /// The PNG to write.
    #[arg(long, value_name = "FILE.png")]
    pub out: PathBuf,
    /// Sequence length (the matrix is T x T).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=sbattn::MAX_WEIGHTS_SEQ_LEN as i64))]
    pub t: u32,
    /// Head dim.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=sbattn::MAX_HEAD_DIM as i64))]
    pub head_dim: u32,
    /// Seed of q and k (normal, mean 0, variance 1).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Storage type of q and k.
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    pub dtype: DtypeArg,
    /// Which keys each query sees.
    #[arg(long, value_enum, default_value_t = MaskArg::Strict)]
    pub mask: MaskArg,
    /// Logit scale [default: 1/sqrt(head dim)]; larger values sharpen both kinds of weights.
    #[arg(long, value_parser = parse_finite)]
    pub scale: Option<f32>,
    /// Smallest weight the log colour scale tells apart (smaller ones get its lowest colour).
    #[arg(long, default_value_t = 1e-4, value_parser = parse_floor)]
    pub floor: f64,
    /// A linear colour scale from 0 to 1 instead of the log scale.
    #[arg(long)]
    pub linear: bool,
}

fn parse_tuning(s: &str) -> Result<sbattn::ForwardTuning, String> {
    sbattn::ForwardTuning::parse(s).map_err(|e| e.to_string())
}
