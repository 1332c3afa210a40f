//! Validation fuzzing without a GPU: arbitrary calls of every op on wgpu's Noop backend (which
//! creates devices and buffers but runs nothing), checked against an independent model of what
//! the library must accept.
//!
//! Shared by `tests/fuzz_validation.rs` (proptest, in CI) and `fuzz/fuzz_targets/validation.rs`
//! (cargo-fuzz / libFuzzer); both feed [`Decisions`] (a stream of numbers, where 0 always means
//! the simplest choice, so that shrinking towards 0 simplifies a case) to [`gen_case`] and run
//! [`check_case`].
//!
//! The model ([`Model`]) computes, in `u128` so that nothing it computes can overflow, every
//! reason the library may refuse a call ([`V`]): shapes, scales and thresholds, and for each
//! tensor the largest element it touches (offset + head dim + the spans of batch, token and
//! head axes), its bytes against its buffer, its binding (start rounded down to the device's
//! storage offset alignment, size rounded up to 4) against the binding limit, its
//! binding-relative indices and strides against `u32`, the nesting rule that makes an output
//! injective, the aliasing rule, grid and scratch limits. The properties:
//!
//! 1. **sound**: a call the library accepts has no violation (in particular every index of every
//!    tensor lies in its buffer and fits `u32`; a violation of that kind is reported `UNSAFE`);
//! 2. **complete**: a call with no violation is accepted (the plan's own limits aside: an
//!    `Error::Limit` from the planners, such as workgroup memory, is allowed when its value
//!    exceeds its limit);
//! 3. **justified**: every error the library returns names a violation the model found (same
//!    kind, same tensor);
//! 4. nothing panics, no `Error::Device` is ever returned (what the library accepts, wgpu must
//!    accept too), and the encoder stays valid after every call, accepted or not (it is finished
//!    inside a validation error scope).
//!
//! The ops (a third of the cases each) and what of them the cases reach:
//! - **forward** (`Gen::forward`), its keys as every [`sbattn::Keys`] variant: `Keys::Queries`
//!   (self-attention; half the calls), `Keys::Prefix` (a third: mostly under 40 earlier keys,
//!   sometimes up to 300; wild: `u32::MAX`, `u32::MAX - T`, `2^31`, which must give an error,
//!   never a wrapped index), `Keys::Lengths` (a sixth: a key count per sequence, mostly at
//!   least its queries; wild: fewer keys than queries, or a list of the wrong length), and
//!   `Keys::Cache` (the prefill steps of the cache cases, below). **Varlen**: a quarter of the
//!   calls pack their sequences (`with_varlen`), with any of the first three key variants:
//!   `cu_seqlens` of up to 64 sequences of 0 to 80 tokens (wild: the wrong length, not from 0,
//!   decreasing, not ending at `T`, a batch that disagrees). Fused QKV in a fifth of the
//!   calls; every path (forced ones the config lacks included), the tensor-core key block.
//! - **split**: a tenth of the tame calls are big (`Gen::dims`: tensors near or past the
//!   configs' binding limits of 256 KiB to 2 MiB), and a call with many sequences or query
//!   tiles puts its schedule table (8 bytes per work item, 16 per sequence) past the limit. A
//!   dense call over the limit (its own k and v, no `cu_seqlens`) may run split
//!   (ops/forward/split.rs, over sequences, kv head groups, then queries as `Keys::Prefix`):
//!   the model then neither requires nor forbids the limit error while every piece the split
//!   must reach fits ([`Model::maybe`]), forbids it when every piece surely fits, and every
//!   other rule still applies to the whole call; a call past the limit on a cache or packed
//!   must be refused (`Error::Limit`, the table included). The named regression tests of
//!   tests/fuzz_validation.rs pin the split's whole-call checks and the schedule table.
//! - **backward**, on a dense self-attention forward (`Keys::Queries`, no varlen), with its
//!   own gradient tensors, `d_rem` and `d_bias` as the remainder mode needs them (wild: one
//!   missing or extra), the saved `log rem` rarely missing.
//! - **KV cache** (the library's or on the case's buffers) with a sequence of `set_lengths`,
//!   appends (ragged counts), decodes (forced splits, lanes, loads, keys per step) and
//!   **prefill** steps: `Forward::on_cache` (`Keys::Cache`) with 1 to 4 queries per sequence,
//!   dense or (a third) packed by `cu_seqlens`, mostly of the cache's batch, kv heads, head dim
//!   and dtype (wild: any of them off). Dense ones on the automatic path go to the decode
//!   kernels, as the library routes them (`as_decode`), and the model judges them as decodes.
//!
//! Half the cases are "tame" (mostly valid choices: most calls are accepted, and an accepted
//! call is where a missing check would be unsafe), half "wild" (any value, aliasing buffers,
//! huge offsets and strides). Known library bugs are named constants (`*_BUG`) where they are
//! tolerated or skipped; [`take_stats`] counts what happened to the calls.
#![allow(dead_code, clippy::too_many_arguments)]

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::OnceLock;

use sbattn::{
    Append, Attention, Backward, BufferRef, CacheTensor, Decode, DecodeTuning, DeviceOptions, Dtype, Error, Forward,
    ForwardTuning, KernelPath, Keys, KvCache, KvCacheDesc, Layout, Load, Mask, Remainder, Shape, Strides, TensorRef,
};

// ---------------------------------------------------------------------------------------------
// Decisions
// ---------------------------------------------------------------------------------------------

/// A stream of choices: words (proptest) or bytes (libFuzzer). Past its end every choice is 0.
pub enum Decisions<'a> {
    /// One word per choice.
    Words(&'a [u64], usize),
    /// 1, 2 or 8 bytes per choice, as the range needs.
    Bytes(&'a [u8], usize),
}

impl<'a> Decisions<'a> {
    pub fn words(w: &'a [u64]) -> Self {
        Decisions::Words(w, 0)
    }

    pub fn bytes(b: &'a [u8]) -> Self {
        Decisions::Bytes(b, 0)
    }

    fn raw(&mut self, n: u64) -> u64 {
        match self {
            Decisions::Words(w, at) => {
                let x = w.get(*at).copied().unwrap_or(0);
                *at += 1;
                x
            }
            Decisions::Bytes(b, at) => {
                let len = if n <= 1 << 8 { 1 } else if n <= 1 << 16 { 2 } else { 8 };
                let mut x = 0u64;
                for i in 0..len {
                    x |= (b.get(*at + i).copied().unwrap_or(0) as u64) << (8 * i);
                }
                *at += len;
                x
            }
        }
    }

    /// Uniform-ish in `0..n` (0 for `n <= 1`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n <= 1 {
            return 0;
        }
        self.raw(n) % n
    }

    /// `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }

    /// True with probability `num / den`; false is the simple outcome (choice 0).
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) >= den - num
    }

    pub fn any_u64(&mut self) -> u64 {
        self.raw(u64::MAX)
    }

    /// A size of a shape: mostly 1 to 4, sometimes up to 70, rarely 0 or huge.
    pub fn dim(&mut self) -> u32 {
        match self.below(20) {
            0..=13 => self.range(1, 4) as u32,
            14..=16 => self.range(1, 70) as u32,
            17 => 0,
            18 => self.pick(&[65_535, 65_536, 1 << 20, 1 << 24, 1 << 31, u32::MAX - 1, u32::MAX]),
            _ => self.any_u64() as u32,
        }
    }

    /// A head dim: mostly 1 to 16, sometimes up to 256, rarely out of range.
    pub fn head_dim(&mut self) -> u32 {
        match self.below(20) {
            0..=11 => self.range(1, 16) as u32,
            12..=16 => self.range(1, 256) as u32,
            17 => 0,
            18 => self.range(257, 300) as u32,
            _ => self.pick(&[1 << 16, u32::MAX]),
        }
    }

    /// An element offset: mostly 0 or small, sometimes past 2^32 or near 2^64.
    pub fn offset(&mut self) -> u64 {
        match self.below(20) {
            0..=10 => 0,
            11..=13 => self.below(4096),
            14 => 8 * self.below(512),
            15 | 16 => (1 << 32) - 8 + self.below(16),
            17 => self.pick(&[1 << 31, 1 << 40, 1 << 62, 1 << 63, u64::MAX / 4, u64::MAX / 2, u64::MAX - 1, u64::MAX]),
            _ => self.any_u64(),
        }
    }

    /// A stride component for random strides.
    pub fn stride(&mut self) -> u64 {
        match self.below(10) {
            0..=5 => self.below(300),
            6 => 0,
            7 => (1 << 32) - 4 + self.below(8),
            8 => self.pick(&[1 << 31, 1 << 40, 1 << 62, u64::MAX / 2, u64::MAX]),
            _ => self.any_u64(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Devices
// ---------------------------------------------------------------------------------------------

/// The largest buffer a case makes (what it asks the Noop backend to allocate).
pub const BUFFER_CAP: u64 = 2 << 20;

/// A Noop device shape: limits, features and subgroups (the backend reports what it is told).
pub struct Config {
    pub name: &'static str,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    pub subgroup: u32,
    pub device_type: wgpu::DeviceType,
}

/// Three devices: a desktop GPU (subgroups of 32, 256-byte binding alignment, a storage
/// binding limit below the buffer limit, 64 storage buffers per stage), a small CPU adapter
/// (lavapipe-like subgroups of 8, a 64-byte alignment, small binding, buffer and grid limits,
/// 16 storage buffers per stage) and a bare one (no f16, no subgroups, WebGPU's defaults with
/// small buffers: 8 storage buffers per stage).
pub fn configs() -> Vec<Config> {
    let d = wgpu::Limits::default();
    vec![
        Config {
            name: "desktop",
            limits: wgpu::Limits {
                max_storage_buffer_binding_size: 1 << 20,
                max_buffer_size: 2 << 20,
                max_compute_workgroup_storage_size: 48 << 10,
                max_compute_invocations_per_workgroup: 1024,
                max_compute_workgroup_size_x: 1024,
                max_storage_buffers_per_shader_stage: 64,
                ..d.clone()
            },
            features: wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP,
            subgroup: 32,
            device_type: wgpu::DeviceType::DiscreteGpu,
        },
        Config {
            name: "small",
            limits: wgpu::Limits {
                max_storage_buffer_binding_size: 256 << 10,
                max_buffer_size: 1 << 20,
                max_compute_workgroups_per_dimension: 300,
                min_storage_buffer_offset_alignment: 64,
                max_compute_workgroup_storage_size: 32 << 10,
                max_storage_buffers_per_shader_stage: 16,
                ..d.clone()
            },
            features: wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP,
            subgroup: 8,
            device_type: wgpu::DeviceType::Cpu,
        },
        Config {
            name: "bare",
            limits: wgpu::Limits { max_storage_buffer_binding_size: 2 << 20, max_buffer_size: 2 << 20, ..d },
            features: wgpu::Features::empty(),
            subgroup: 4,
            device_type: wgpu::DeviceType::Other,
        },
    ]
}

/// One Noop device of a [`Config`].
pub struct Env {
    pub config: Config,
    pub adapter: wgpu::Adapter,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    /// A context shared by the cases that do not need a fresh one (its kernels compiled once).
    pub shared: Attention,
}

fn make_env(config: Config) -> Env {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::NOOP,
        backend_options: wgpu::BackendOptions {
            noop: wgpu::NoopBackendOptions {
                enable: true,
                limits: Some(config.limits.clone()),
                features: Some(config.features),
                device_type: Some(config.device_type),
                subgroup_min_size: Some(config.subgroup),
                subgroup_max_size: Some(config.subgroup),
            },
            ..Default::default()
        },
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default())).expect("noop adapter");
    let desc = Attention::device_descriptor(&adapter, &DeviceOptions::default());
    let (device, queue) = pollster::block_on(adapter.request_device(&desc)).expect("noop device");
    let shared = Attention::from_adapter(&adapter, &device, &queue);
    Env { config, adapter, device, queue, shared }
}

/// The Noop device of config `i` (made once per process).
pub fn env(i: usize) -> &'static Env {
    static ENVS: OnceLock<Vec<Env>> = OnceLock::new();
    let envs = ENVS.get_or_init(|| configs().into_iter().map(make_env).collect());
    &envs[i % envs.len()]
}

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

/// Where a tensor's tokens and heads lie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addr {
    Contiguous(Layout),
    Strided(Strides),
}

/// A `[B, T, heads, D]` tensor: a buffer of the case, an element offset, an addressing.
#[derive(Clone, Copy, Debug)]
pub struct Tensor {
    pub buf: usize,
    pub offset: u64,
    pub addr: Addr,
}

/// A run of elements (row outputs, bias): a buffer of the case and an element offset.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub buf: usize,
    pub offset: u64,
}

/// A buffer of a case: how its size is chosen once every tensor on it is known.
#[derive(Clone, Copy, Debug)]
pub enum Size {
    /// Exactly what the tensors on it need (their bindings' ends), or `BUFFER_CAP` if more.
    Fit,
    /// That minus a few bytes (at least 0).
    Short(u64),
    /// That plus a few bytes.
    Long(u64),
    /// A size of its own.
    Raw(u64),
}

#[derive(Clone, Copy, Debug)]
pub struct Buf {
    pub size: Size,
    pub storage: bool,
}

#[derive(Clone, Copy, Debug)]
pub enum Rem {
    Discard,
    Return(Run),
    AddToValue,
    AddBias(Run),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub b: u32,
    pub t: u32,
    pub h: u32,
    pub hkv: Option<u32>,
    pub d: u32,
}

impl Dims {
    pub fn hkv(&self) -> u32 {
        self.hkv.unwrap_or(self.h)
    }

    pub fn shape(&self) -> Shape {
        let s = Shape::new().with_batch(self.b).with_seq_len(self.t).with_heads(self.h).with_head_dim(self.d);
        match self.hkv {
            Some(k) => s.with_kv_heads(k),
            None => s,
        }
    }
}

#[derive(Clone, Debug)]
pub struct FwdCase {
    pub dims: Dims,
    pub dtype: Dtype,
    pub q: Tensor,
    pub k: Tensor,
    pub v: Tensor,
    pub o: Tensor,
    pub mask: Mask,
    pub scale: Option<f32>,
    pub rem: Rem,
    pub log_rem: Option<Run>,
    pub path: KernelPath,
    pub eps: f32,
    pub coop_block_n: Option<u32>,
    /// Where the keys are ([`sbattn::Keys`] other than `Cache`, which the prefill step of a
    /// cache case covers).
    pub keys: KeySpec,
    /// Packed sequences: `Forward::with_varlen`.
    pub cu: Option<Vec<u32>>,
}

/// [`sbattn::Keys`] without the cache.
#[derive(Clone, Debug)]
pub enum KeySpec {
    Queries,
    Prefix(u32),
    Lengths(Vec<u32>),
}

#[derive(Clone, Debug)]
pub struct BwdCase {
    pub fwd: FwdCase,
    pub d_o: Tensor,
    pub dq: Tensor,
    pub dk: Tensor,
    pub dv: Tensor,
    pub d_rem: Option<Run>,
    pub d_bias: Option<Run>,
}

/// A KV cache: allocated by the library, or on the case's buffers.
#[derive(Clone, Debug)]
pub struct CacheCase {
    pub batch: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
    pub capacity: u32,
    pub dtype: Dtype,
    pub layout: Layout,
    /// K and V on the case's buffers (`KvCache::from_buffers`), else `KvCache::new`.
    pub on: Option<(Tensor, Tensor)>,
    pub steps: Vec<Step>,
}

#[derive(Clone, Debug)]
pub enum Step {
    SetLengths(Vec<u32>),
    Append { k: Tensor, v: Tensor, tokens: u32, counts: Option<Vec<u32>> },
    Decode(DecodeStep),
    /// A forward call on the cache (`Forward::on_cache`, `Keys::Cache`): its `dims` batch, kv
    /// heads and head dim should be the cache's, its `keys` are unused.
    Prefill(FwdCase),
}

#[derive(Clone, Debug)]
pub struct DecodeStep {
    pub heads: u32,
    pub n: u32,
    pub q: Tensor,
    pub o: Tensor,
    pub mask: Mask,
    pub scale: Option<f32>,
    pub rem: Rem,
    pub log_rem: Option<Run>,
    pub path: KernelPath,
    pub eps: f32,
    pub splits: Option<u32>,
    pub lanes: Option<u32>,
    pub load: Option<Load>,
    pub keys_per_step: Option<u32>,
}

impl DecodeStep {
    /// The forced kernel choices of the step.
    pub fn tuning(&self) -> DecodeTuning {
        let mut t = DecodeTuning::default();
        if let Some(x) = self.splits {
            t = t.with_splits(x);
        }
        if let Some(x) = self.lanes {
            t = t.with_lanes(x);
        }
        if let Some(x) = self.load {
            t = t.with_load(x);
        }
        if let Some(x) = self.keys_per_step {
            t = t.with_keys_per_step(x);
        }
        t
    }
}

#[derive(Clone, Debug)]
pub enum Op {
    Forward(FwdCase),
    Backward(Box<BwdCase>),
    Cache(CacheCase),
}

/// One generated case: a device, buffers, and the calls.
#[derive(Clone, Debug)]
pub struct Case {
    pub config: usize,
    /// A fresh `Attention` (empty scratch and kernel cache) rather than the device's shared one.
    pub fresh: bool,
    pub bufs: Vec<Buf>,
    pub op: Op,
}

// ---------------------------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------------------------

struct Gen<'d, 'a> {
    d: &'d mut Decisions<'a>,
    bufs: Vec<Buf>,
    /// Mostly valid choices (half the cases): each wild choice below has a few percent of
    /// being invalid, and a call makes dozens of them, so without this almost every call would
    /// be refused and the accepted ones (where a missed check would be unsafe) would be rare.
    tame: bool,
}

impl Gen<'_, '_> {
    fn dim(&mut self) -> u32 {
        if !self.tame {
            return self.d.dim();
        }
        match self.d.below(4) {
            0..=2 => self.d.range(1, 4) as u32,
            _ => self.d.range(1, 70) as u32,
        }
    }

    fn head_dim(&mut self) -> u32 {
        if !self.tame {
            return self.d.head_dim();
        }
        match self.d.below(3) {
            0 | 1 => self.d.range(1, 16) as u32,
            _ => self.d.range(1, 256) as u32,
        }
    }

    fn offset(&mut self) -> u64 {
        if !self.tame {
            return self.d.offset();
        }
        match self.d.below(4) {
            0 | 1 => 0,
            2 => self.d.below(64),
            _ => 8 * self.d.below(64),
        }
    }

    fn new_buf(&mut self) -> usize {
        if self.tame {
            let size = if self.d.chance(1, 4) { Size::Long(self.d.below(600)) } else { Size::Fit };
            self.bufs.push(Buf { size, storage: true });
            return self.bufs.len() - 1;
        }
        let size = match self.d.below(12) {
            0..=6 => Size::Fit,
            7 => Size::Short(self.d.range(1, 8)),
            8 | 9 => Size::Long(self.d.below(600)),
            _ => Size::Raw(self.d.pick(&[0, 2, 4, 6, 16, 64, 256, 1000, 4096, 65_536, BUFFER_CAP])),
        };
        let storage = !self.d.chance(1, 30);
        self.bufs.push(Buf { size, storage });
        self.bufs.len() - 1
    }

    /// A new buffer, or rarely one of the case's earlier ones (aliasing).
    fn buf(&mut self) -> usize {
        if !self.tame && !self.bufs.is_empty() && self.d.chance(1, 8) {
            return self.d.below(self.bufs.len() as u64) as usize;
        }
        self.new_buf()
    }

    fn addr(&mut self, tokens: u32, heads: u32, d: u32) -> Addr {
        let n = if self.tame { 8 } else { 10 };
        match self.d.below(n) {
            0..=3 => Addr::Contiguous(Layout::Bthd),
            4 | 5 => Addr::Contiguous(Layout::Bhtd),
            6 | 7 => {
                // Padding between heads and tokens, either order.
                let (ph, pt, pb) = (self.d.below(9) as u128, self.d.below(9) as u128, self.d.below(9) as u128);
                let (t, h, d) = (tokens as u128, heads as u128, d as u128);
                let sat = |x: u128| x.min(u64::MAX as u128) as u64;
                let s = if self.d.chance(1, 2) {
                    let head = d + ph;
                    let token = h * head + pt;
                    Strides { batch: sat(t * token + pb), token: sat(token), head: sat(head) }
                } else {
                    let token = d + pt;
                    let head = t * token + ph;
                    Strides { batch: sat(h * head + pb), token: sat(token), head: sat(head) }
                };
                Addr::Strided(s)
            }
            _ => Addr::Strided(Strides { batch: self.d.stride(), token: self.d.stride(), head: self.d.stride() }),
        }
    }

    fn tensor(&mut self, tokens: u32, heads: u32, d: u32) -> Tensor {
        let buf = self.buf();
        let addr = self.addr(tokens, heads, d);
        Tensor { buf, offset: self.offset(), addr }
    }

    fn run(&mut self) -> Run {
        let buf = self.buf();
        Run { buf, offset: self.offset() }
    }

    fn dims(&mut self) -> Dims {
        if self.tame && self.d.chance(1, 10) {
            // Big: tensors near or past the binding limits of the configs (a forward call then
            // runs split).
            let (h, group) = (self.d.range(1, 4) as u32, self.d.range(1, 4) as u32);
            let d = self.d.pick(&[32, 64, 100, 128, 256]);
            return Dims { b: self.d.range(1, 4) as u32, t: self.d.range(16, 400) as u32, h: h * group, hkv: Some(h), d };
        }
        let h = self.dim();
        let hkv = match self.d.below(if self.tame { 5 } else { 6 }) {
            0..=2 => None,
            3 | 4 => {
                // A divisor of h.
                let divs: Vec<u32> = if h > 0 && h <= 4096 { (1..=h).filter(|x| h.is_multiple_of(*x)).collect() } else { vec![1] };
                Some(self.d.pick(&divs))
            }
            _ => Some(self.d.dim()),
        };
        Dims { b: self.dim(), t: self.dim(), h, hkv, d: self.head_dim() }
    }

    fn dtype(&mut self) -> Dtype {
        if self.d.chance(1, 2) { Dtype::F16 } else { Dtype::F32 }
    }

    fn mask(&mut self) -> Mask {
        if self.d.chance(1, 2) { Mask::IncludeCurrent } else { Mask::Strict }
    }

    fn scale(&mut self) -> Option<f32> {
        match self.d.below(if self.tame { 9 } else { 12 }) {
            0..=6 => None,
            7 => Some(0.0),
            8 => Some(-0.5),
            9 if self.tame => Some(self.d.range(0, 4000) as f32 / 1000.0 - 2.0),
            9 => Some(self.d.pick(&[f32::NAN, f32::INFINITY, f32::NEG_INFINITY])),
            10 => Some(self.d.pick(&[f32::MAX, f32::MIN_POSITIVE, -0.0, 1e-40])),
            _ => Some(f32::from_bits(self.d.any_u64() as u32)),
        }
    }

    fn eps(&mut self) -> f32 {
        match self.d.below(if self.tame { 10 } else { 12 }) {
            0..=7 => 0.0,
            8 | 9 => self.d.pick(&[1e-4, 1e-2, 0.5, 0.999_999]),
            10 => self.d.pick(&[1.0, -1e-3, f32::NAN, f32::INFINITY, -0.0]),
            _ => f32::from_bits(self.d.any_u64() as u32),
        }
    }

    fn path(&mut self) -> KernelPath {
        match self.d.below(8) {
            0..=3 => KernelPath::Auto,
            4 => KernelPath::Subgroup,
            5 => KernelPath::SharedMemory,
            6 => KernelPath::EmulatedCooperativeMatrix,
            _ => KernelPath::CooperativeMatrix,
        }
    }

    fn rem(&mut self) -> Rem {
        match self.d.below(4) {
            0 => Rem::Discard,
            1 => Rem::Return(self.run()),
            2 => Rem::AddToValue,
            _ => Rem::AddBias(self.run()),
        }
    }

    /// `cu_seqlens` for `n` sequences: mostly valid (its last entry then replaces `t`), rarely
    /// not (wrong length, not from 0, decreasing, not ending at `t`).
    fn cu_seqlens(&mut self, n: u32, t: &mut u32) -> Vec<u32> {
        let n = n.min(64);
        let mut cu = vec![0u32];
        for _ in 0..n {
            let len = match self.d.below(8) {
                0..=4 => self.d.range(1, 8) as u32,
                5 => 0,
                _ => self.d.range(1, 80) as u32,
            };
            cu.push(cu[cu.len() - 1] + len);
        }
        *t = cu[cu.len() - 1];
        if !self.tame && self.d.chance(1, 4) {
            match self.d.below(5) {
                0 => {
                    cu.pop();
                }
                1 => cu[0] = self.d.range(1, 3) as u32,
                2 if cu.len() > 2 => cu.swap(1, 2),
                3 => *t = self.d.dim(),
                _ => cu.push(cu[cu.len() - 1]),
            }
        }
        cu
    }

    /// Where the keys are for `seqs` sequences of `queries` tokens (the longest).
    fn keys(&mut self, seqs: u32, queries: u32) -> KeySpec {
        match self.d.below(6) {
            0..=2 => KeySpec::Queries,
            3 | 4 => KeySpec::Prefix(match self.d.below(8) {
                0..=5 => self.d.below(40) as u32,
                6 => self.d.range(1, 300) as u32,
                _ if self.tame => 0,
                _ => self.d.pick(&[u32::MAX, u32::MAX - queries, 1 << 31]),
            }),
            _ => {
                let n = if !self.tame && self.d.chance(1, 10) { self.d.below(5) as u32 } else { seqs.min(64) };
                KeySpec::Lengths(
                    (0..n)
                        .map(|_| match self.d.below(8) {
                            0..=5 => queries.saturating_add(self.d.below(20) as u32),
                            6 if !self.tame => self.d.below(queries as u64 + 1) as u32,
                            _ => queries.saturating_add(self.d.below(300) as u32),
                        })
                        .collect(),
                )
            }
        }
    }

    /// A forward call (`dense`: self-attention without packing).
    fn forward(&mut self, dense: bool) -> FwdCase {
        let mut dims = self.dims();
        let dtype = self.dtype();
        let cu = if !dense && self.d.chance(1, 4) {
            let mut t = dims.t;
            let cu = self.cu_seqlens(dims.b, &mut t);
            dims.b = (cu.len() as u32).saturating_sub(1);
            if !self.tame && self.d.chance(1, 10) {
                dims.b = self.d.dim();
            }
            dims.t = t;
            Some(cu)
        } else {
            None
        };
        // Queries of the longest sequence.
        let longest = match &cu {
            Some(cu) => cu.windows(2).map(|w| w[1].saturating_sub(w[0])).max().unwrap_or(0),
            None => dims.t,
        };
        let keys = if dense { KeySpec::Queries } else { self.keys(dims.b, longest) };
        // Token extents of q and o, and of k and v (those of a valid call; anything for others).
        let t = dims.t;
        let k_tokens = match fwd_layout(&dims, &keys, cu.as_deref(), None) {
            Ok(l) => l.k_tokens,
            Err(()) => t,
        };
        let (h, hkv, d) = (dims.h, dims.hkv(), dims.d);
        let (q, k, v) = if self.d.chance(1, 5) {
            // Fused QKV: one buffer, per token [q heads | k heads | v heads] (+ padding).
            let buf = self.new_buf();
            let pad = self.d.below(9);
            let base = self.d.offset();
            let (h, hkv, d) = (h as u128, hkv as u128, d as u128);
            let sat = |x: u128| x.min(u64::MAX as u128) as u64;
            let token = (h + 2 * hkv) * d + pad as u128;
            let s = Strides { batch: sat(t as u128 * token), token: sat(token), head: sat(d) };
            let at = |x: u128| sat(base as u128 + x);
            let f = |off| Tensor { buf, offset: off, addr: Addr::Strided(s) };
            (f(at(0)), f(at(h * d)), f(at((h + hkv) * d)))
        } else {
            (self.tensor(t, h, d), self.tensor(k_tokens, hkv, d), self.tensor(k_tokens, hkv, d))
        };
        let o = self.tensor(t, h, d);
        let rem = self.rem();
        let log_rem = if self.d.chance(1, 2) { Some(self.run()) } else { None };
        FwdCase {
            dims,
            dtype,
            q,
            k,
            v,
            o,
            mask: self.mask(),
            scale: self.scale(),
            rem,
            log_rem,
            path: self.path(),
            eps: self.eps(),
            coop_block_n: match self.d.below(8) {
                0..=5 => None,
                6 => Some(self.d.pick(&[32, 64])),
                _ if self.tame => None,
                _ => Some(self.d.pick(&[0, 16, 48, 128])),
            },
            keys,
            cu,
        }
    }

    fn backward(&mut self) -> BwdCase {
        // The backward pass is dense self-attention (Backward has no keys or packing).
        let mut fwd = self.forward(true);
        // The forward's log rem is required: usually given.
        if fwd.log_rem.is_none() && (self.tame || !self.d.chance(1, 10)) {
            fwd.log_rem = Some(self.run());
        }
        fwd.path = match self.d.below(8) {
            0..=4 => KernelPath::Auto,
            5 => KernelPath::Subgroup,
            6 => KernelPath::SharedMemory,
            _ => self.d.pick(&[KernelPath::CooperativeMatrix, KernelPath::EmulatedCooperativeMatrix]),
        };
        let (t, h, hkv, d) = (fwd.dims.t, fwd.dims.h, fwd.dims.hkv(), fwd.dims.d);
        let d_o = self.tensor(t, h, d);
        let dq = self.tensor(t, h, d);
        let (dk, dv) = (self.tensor(t, hkv, d), self.tensor(t, hkv, d));
        // Gradient buffers as the mode wants them, or rarely the wrong way round.
        let wrong = !self.tame && self.d.chance(1, 10);
        let d_rem = (matches!(fwd.rem, Rem::Return(_)) != wrong).then(|| self.run());
        let wrong = !self.tame && self.d.chance(1, 10);
        let d_bias = (matches!(fwd.rem, Rem::AddBias(_)) != wrong).then(|| self.run());
        BwdCase { fwd, d_o, dq, dk, dv, d_rem, d_bias }
    }

    fn lengths(&mut self, batch: u32, capacity: u32) -> Vec<u32> {
        let n = if batch <= 8 { batch } else { self.d.range(0, 9) as u32 };
        let wild = !self.tame;
        let n = if wild && self.d.chance(1, 12) { n.saturating_add(1) } else { n };
        (0..n)
            .map(|_| {
                if wild && self.d.chance(1, 12) { capacity.saturating_add(1) } else { self.d.range(0, capacity.min(40) as u64) as u32 }
            })
            .collect()
    }

    /// Few-of-these sizes of a cache case: 1 to 4, rarely anything.
    fn small(&mut self) -> u32 {
        if !self.tame && self.d.chance(1, 10) { self.d.dim() } else { self.d.range(1, 4) as u32 }
    }

    fn append(&mut self, batch: u32, kv_heads: u32, head_dim: u32) -> Step {
        let tokens = match self.d.below(if self.tame { 8 } else { 10 }) {
            0..=7 => self.d.range(1, 20) as u32,
            8 => 0,
            _ => self.d.dim(),
        };
        let (k, v) = (self.tensor(tokens, kv_heads, head_dim), self.tensor(tokens, kv_heads, head_dim));
        let counts = if self.d.chance(1, 3) {
            let n = if !self.tame && self.d.chance(1, 10) { self.d.range(0, 5) as u32 } else { batch.min(64) };
            Some((0..n).map(|_| self.d.range(0, tokens as u64 + 1) as u32).collect())
        } else {
            None
        };
        Step::Append { k, v, tokens, counts }
    }

    fn decode(&mut self, kv_heads: u32, head_dim: u32) -> Step {
        let heads = match self.d.below(if self.tame { 4 } else { 6 }) {
            0..=3 => kv_heads.saturating_mul(self.d.range(1, 4) as u32),
            _ => self.d.dim(),
        };
        let n = match self.d.below(if self.tame { 9 } else { 10 }) {
            0..=6 => self.d.range(1, 4) as u32,
            7 | 8 => self.d.range(0, 17) as u32,
            _ => self.d.dim(),
        };
        let (q, o) = (self.tensor(n, heads, head_dim), self.tensor(n, heads, head_dim));
        let rem = self.rem();
        let log_rem = if self.d.chance(1, 2) { Some(self.run()) } else { None };
        let paths = [KernelPath::Auto, KernelPath::Auto, KernelPath::Subgroup, KernelPath::SharedMemory, KernelPath::CooperativeMatrix];
        let path = self.d.pick(&paths[..if self.tame { 4 } else { 5 }]);
        let splits = match self.d.below(if self.tame { 5 } else { 6 }) {
            0..=3 => None,
            4 => Some(self.d.range(1, 64) as u32),
            _ => Some(self.d.pick(&[0, 4096, 4097, u32::MAX])),
        };
        let (lanes, keys): (&[u32], &[u32]) = if self.tame { (&[8, 16, 32, 64], &[1, 2, 4, 8]) } else { (&[8, 16, 32, 64, 12, 0], &[1, 2, 4, 8, 3, 0]) };
        let lanes = if self.d.chance(1, 6) { Some(self.d.pick(lanes)) } else { None };
        let load = if self.d.chance(1, 6) { Some(self.d.pick(&[Load::Scalar, Load::Vec4, Load::Vec8])) } else { None };
        let keys_per_step = if self.d.chance(1, 6) { Some(self.d.pick(keys)) } else { None };
        Step::Decode(DecodeStep {
            heads,
            n,
            q,
            o,
            mask: self.mask(),
            scale: self.scale(),
            rem,
            log_rem,
            path,
            eps: self.eps(),
            splits,
            lanes,
            load,
            keys_per_step,
        })
    }

    /// A forward call on the cache: mostly its batch, kv heads, head dim and dtype, a few
    /// queries per sequence (dense or packed).
    fn prefill(&mut self, batch: u32, kv_heads: u32, head_dim: u32, dtype: Dtype) -> Step {
        let mut f = self.forward(true);
        let mut dims = Dims { b: batch, t: self.d.range(1, 4) as u32, h: kv_heads.saturating_mul(self.d.range(1, 3) as u32), hkv: Some(kv_heads), d: head_dim };
        if !self.tame && self.d.chance(1, 5) {
            match self.d.below(4) {
                0 => dims.b = self.small(),
                1 => dims.hkv = Some(self.small()),
                2 => dims.d = self.head_dim(),
                _ => f.dtype = if dtype == Dtype::F16 { Dtype::F32 } else { Dtype::F16 },
            }
        } else {
            f.dtype = dtype;
        }
        if self.d.chance(1, 3) {
            let mut t = dims.t;
            let cu = self.cu_seqlens(dims.b, &mut t);
            dims.t = t;
            f.cu = Some(cu);
        }
        let (t, h, d) = (dims.t, dims.h, dims.d);
        f.q = self.tensor(t, h, d);
        f.o = self.tensor(t, h, d);
        f.dims = dims;
        Step::Prefill(f)
    }

    fn cache(&mut self) -> CacheCase {
        let batch = self.small();
        let kv_heads = self.small();
        let head_dim = self.head_dim();
        let capacity = match self.d.below(if self.tame { 9 } else { 10 }) {
            0..=6 => self.d.range(1, 40) as u32,
            7 | 8 => self.d.range(1, 600) as u32,
            _ => self.d.dim(),
        };
        let dtype = self.dtype();
        let layout = if self.d.chance(1, 2) { Layout::Bthd } else { Layout::Bhtd };
        let on = if self.d.chance(1, 2) {
            let k = self.tensor(capacity, kv_heads, head_dim);
            let v = self.tensor(capacity, kv_heads, head_dim);
            Some((k, v))
        } else {
            None
        };
        let mut steps = Vec::new();
        // Tame: an append first (decode and prefill need tokens in the cache).
        if self.tame {
            steps.push(self.append(batch, kv_heads, head_dim));
        }
        for _ in 0..self.d.range(1, 4) {
            let step = match self.d.below(12) {
                0 => Step::SetLengths(self.lengths(batch, capacity)),
                1..=4 => self.append(batch, kv_heads, head_dim),
                5..=9 => self.decode(kv_heads, head_dim),
                _ => self.prefill(batch, kv_heads, head_dim, dtype),
            };
            steps.push(step);
        }
        CacheCase { batch, kv_heads, head_dim, capacity, dtype, layout, on, steps }
    }
}

/// A case from `d`.
pub fn gen_case(d: &mut Decisions<'_>) -> Case {
    let config = d.below(3) as usize;
    let fresh = d.chance(1, 4);
    let tame = !d.chance(1, 2);
    let mut g = Gen { d, bufs: Vec::new(), tame };
    let op = match g.d.below(3) {
        0 => Op::Forward(g.forward(false)),
        1 => Op::Backward(Box::new(g.backward())),
        _ => Op::Cache(g.cache()),
    };
    Case { config, fresh, bufs: g.bufs, op }
}

// ---------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------

/// A reason to refuse a call, as the model sees it (keyed like the library's errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum V {
    Shape,
    HeadDim,
    Heads,
    Scale,
    Param(&'static str),
    Usage(&'static str),
    TooSmall(&'static str),
    /// Overlapping outputs, indices past `u32` or addresses past `u64`.
    Stride(&'static str),
    BindingLimit,
    Aliasing(&'static str, &'static str),
    /// A dispatch grid over `max_compute_workgroups_per_dimension`.
    Grid,
    /// A scratch, workgroup or buffer-size limit.
    Limit,
    Unsupported,
    CacheOverflow,
    HostData(&'static str),
}

impl V {
    /// Whether accepting a call with this violation would let an index leave its buffer or
    /// its `u32` range, or let writes collide.
    fn unsafe_kind(&self) -> bool {
        matches!(self, V::TooSmall(_) | V::Stride(_) | V::Aliasing(..))
    }
}

/// The key of a library error (`None`: an error no model violation can justify).
fn key(e: &Error) -> Option<V> {
    Some(match e {
        Error::Shape(_) => V::Shape,
        Error::HeadDim { .. } => V::HeadDim,
        Error::HeadsNotDivisible { .. } => V::Heads,
        Error::NonFiniteScale(_) => V::Scale,
        Error::InvalidParameter { name, .. } => V::Param(name),
        Error::BufferUsage { tensor, .. } => V::Usage(tensor),
        Error::BufferTooSmall { tensor, .. } => V::TooSmall(tensor),
        Error::Stride { tensor, .. } => V::Stride(tensor),
        Error::Limit { what: "storage binding size", .. } => V::BindingLimit,
        Error::Limit { what, .. } if what.contains("dispatch") => V::Grid,
        Error::Limit { .. } => V::Limit,
        Error::Aliasing { a, b } => V::Aliasing(a.min(b), a.max(b)),
        Error::Unsupported(_) => V::Unsupported,
        Error::CacheOverflow { .. } => V::CacheOverflow,
        Error::HostData { what, .. } => V::HostData(what),
        _ => return None,
    })
}

/// A tensor's binding as the model computes it.
#[derive(Clone, Copy, Debug)]
struct Bound {
    name: &'static str,
    buf: usize,
    write: bool,
    /// Bytes of the binding.
    start: u128,
    end: u128,
    /// Binding-relative element offset and strides (0 for single-entry axes).
    rel: u128,
    strides: [u128; 3],
}

const U32: u128 = u32::MAX as u128;
const U64: u128 = u64::MAX as u128;

/// The model of one call: its violations, and the bindings it would make.
pub struct Model<'a> {
    limits: &'a wgpu::Limits,
    sizes: &'a [u64],
    storage: &'a [bool],
    pub v: BTreeSet<V>,
    /// Violations that justify a refusal without requiring one (a forward call over the binding
    /// limit that the library may split into calls that fit).
    pub maybe: BTreeSet<V>,
    /// A known library bug this call may run into (see [`MERGE_BINDINGS_BUG`],
    /// [`COOP_BINDINGS_BUG`]): an `Error::Device` is then tolerated.
    pub known_bug: Option<&'static str>,
    /// A known library bug that makes the call panic: it is not made.
    pub skip: Option<&'static str>,
    /// A forward call over the binding limit that may run split.
    pub split: bool,
    bound: Vec<Bound>,
    all_bound: bool,
}

/// Strides of `addr` for `[tokens, heads, d]`, exactly.
fn strides_of(addr: Addr, tokens: u32, heads: u32, d: u32) -> [u128; 3] {
    let (t, h, d) = (tokens as u128, heads as u128, d as u128);
    match addr {
        Addr::Contiguous(Layout::Bthd) => [t * h * d, h * d, d],
        Addr::Contiguous(Layout::Bhtd) => [h * t * d, d, t * d],
        Addr::Strided(s) => [s.batch as u128, s.token as u128, s.head as u128],
    }
}

/// The largest element index (from the tensor's first) of axes `extents x strides` and an
/// inner run of `inner`, saturating (anything past `u64` is out of range anyway).
fn span(extents: [u32; 3], strides: [u128; 3], inner: u128) -> u128 {
    let mut last = inner.saturating_sub(1);
    for (e, s) in extents.iter().zip(strides) {
        last = last.saturating_add((*e as u128).saturating_sub(1).saturating_mul(s));
    }
    last
}

/// The nesting rule: sorted by stride, every axis with more than one entry steps over all
/// the smaller axes span (sufficient for distinct indices to address distinct elements).
fn nested(extents: [u32; 3], strides: [u128; 3], inner: u128) -> bool {
    let mut axes: Vec<(u128, u128)> = extents.iter().zip(strides).filter(|(e, _)| **e > 1).map(|(e, s)| (s, *e as u128)).collect();
    axes.sort();
    let mut covered = inner;
    for (s, e) in axes {
        if s < covered {
            return false;
        }
        covered = covered.saturating_add(s.saturating_mul(e - 1));
    }
    true
}

impl<'a> Model<'a> {
    pub fn new(limits: &'a wgpu::Limits, sizes: &'a [u64], storage: &'a [bool]) -> Self {
        Model { limits, sizes, storage, v: BTreeSet::new(), maybe: BTreeSet::new(), known_bug: None, skip: None, split: false, bound: Vec::new(), all_bound: true }
    }

    fn add(&mut self, v: V) {
        self.v.insert(v);
    }

    fn shape(&mut self, b: u32, t: u32, h: u32, hkv: u32, d: u32) {
        if b == 0 || t == 0 || h == 0 || hkv == 0 {
            self.add(V::Shape);
        }
        if d == 0 || d > 256 {
            self.add(V::HeadDim);
        }
        if hkv != 0 && !h.is_multiple_of(hkv) {
            self.add(V::Heads);
        }
    }

    fn scale(&mut self, scale: Option<f32>, d: u32) {
        let s = scale.unwrap_or(1.0 / (d as f32).sqrt());
        if !s.is_finite() {
            self.add(V::Scale);
        }
    }

    fn eps(&mut self, eps: f32) {
        if !(0.0..1.0).contains(&eps) {
            self.add(V::Param("early_exit_eps"));
        }
    }

    /// Models binding `extents x strides` of `inner` contiguous `es`-byte elements at element
    /// `offset` of buffer `buf`.
    fn bind(&mut self, name: &'static str, buf: usize, offset: u64, extents: [u32; 3], strides: [u128; 3], inner: u128, es: u128, write: bool) {
        let before = self.v.len();
        if !self.storage[buf] {
            self.add(V::Usage(name));
        }
        let last = (offset as u128).saturating_add(span(extents, strides, inner));
        let end = last.saturating_add(1).saturating_mul(es);
        if end > U64 {
            self.add(V::Stride(name));
            self.all_bound = false;
            return;
        }
        if write && !nested(extents, strides, inner) {
            self.add(V::Stride(name));
        }
        let align = (self.limits.min_storage_buffer_offset_alignment.max(4)) as u128;
        let first = offset as u128 * es;
        let start = first / align * align;
        let size = (end - start).next_multiple_of(4);
        if start + size > self.sizes[buf] as u128 {
            self.add(V::TooSmall(name));
        }
        if size > self.limits.max_storage_buffer_binding_size as u128 {
            self.add(V::BindingLimit);
        }
        let rel = (first - start) / es;
        if rel + (last - offset as u128) > U32 {
            self.add(V::Stride(name));
        }
        let mut rs = [0u128; 3];
        for (i, (e, s)) in extents.iter().zip(strides).enumerate() {
            if *e > 1 {
                if s > U32 {
                    self.add(V::Stride(name));
                }
                rs[i] = s;
            }
        }
        // A binding over the size limit only is still a range of its buffer (a split forward
        // call binds parts of it): the aliasing rule applies to it.
        let only_limit = self.v.len() == before + 1 && self.v.contains(&V::BindingLimit) && size > self.limits.max_storage_buffer_binding_size as u128;
        if self.v.len() == before || only_limit {
            self.bound.push(Bound { name, buf, write, start, end: start + size, rel, strides: rs });
        } else {
            self.all_bound = false;
        }
    }

    fn tensor(&mut self, name: &'static str, t: &Tensor, [b, tok, h]: [u32; 3], d: u32, es: u64, write: bool) {
        let s = strides_of(t.addr, tok, h, d);
        self.bind(name, t.buf, t.offset, [b, tok, h], s, d as u128, es as u128, write);
    }

    fn run(&mut self, name: &'static str, r: &Run, len: u128, es: u64, write: bool) {
        // A run is one axis of `len` elements: the inner run itself.
        self.bind(name, r.buf, r.offset, [1, 1, 1], [0; 3], len, es as u128, write);
    }

    /// The aliasing rule over every binding made so far (only once all of them are valid: the
    /// library checks aliasing last).
    fn aliasing(&mut self) {
        if !self.all_bound {
            return;
        }
        let b = self.bound.clone();
        for (i, x) in b.iter().enumerate() {
            for y in &b[i + 1..] {
                if x.buf != y.buf || (!x.write && !y.write) {
                    continue;
                }
                if x.write != y.write || (x.start < y.end && y.start < x.end) {
                    self.add(V::Aliasing(x.name.min(y.name), x.name.max(y.name)));
                }
            }
        }
    }

    fn grid(&mut self, sizes: &[u128]) {
        let lim = self.limits.max_compute_workgroups_per_dimension as u128;
        if sizes.iter().any(|s| *s > lim) {
            self.add(V::Grid);
        }
    }

    fn binding(&self, name: &str) -> Option<Bound> {
        self.bound.iter().rev().find(|b| b.name == name).copied()
    }

    /// Row outputs and bias of a forward or decode call.
    fn rows(&mut self, rem: &Rem, log_rem: Option<&Run>, rows: u128, bias_len: u128, es: u64) {
        match rem {
            Rem::Return(r) => self.run("rem", r, rows, 4, true),
            Rem::AddBias(r) => self.run("bias", r, bias_len, es, false),
            _ => {}
        }
        if let Some(r) = log_rem {
            self.run("log_rem", r, rows, 4, true);
        }
    }
}

fn dtype_check(m: &mut Model<'_>, attn: &Attention, dtype: Dtype) {
    if dtype == Dtype::F16 && !attn.capabilities().f16() {
        m.add(V::Unsupported);
    }
}

/// The keys of a forward call on a cache: whether the cache matches the call (batch, kv
/// heads, head dim, dtype), its capacity and its lengths.
pub struct CacheKeys<'a> {
    pub matches: bool,
    pub capacity: u32,
    pub lengths: &'a [u32],
}

/// The sequences of a forward call as the model sees them: the token extents of `q`/`o` and
/// `k`/`v`, and the queries of each sequence.
#[derive(Clone, Debug)]
pub struct Lay {
    pub q_batch: u32,
    pub q_tokens: u32,
    pub k_batch: u32,
    pub k_tokens: u32,
    pub queries: Queries,
}

/// The queries of each sequence of a forward call.
#[derive(Clone, Debug)]
pub enum Queries {
    /// `n` sequences of `t` each (dense: `n` may be huge).
    Dense { n: u32, t: u32 },
    /// Packed.
    Packed(Vec<u32>),
}

impl Queries {
    /// Work items of query tiles of `bm` rows.
    pub fn tiles(&self, bm: u32) -> u128 {
        match self {
            Queries::Dense { n, t } => *n as u128 * t.div_ceil(bm) as u128,
            Queries::Packed(q) => q.iter().map(|x| x.div_ceil(bm) as u128).sum(),
        }
    }
}

/// The sequences of a forward call, or `Err` for a call whose description the library must
/// refuse with `Error::Shape` (the queries of `cu_seqlens`, the keys per sequence, the
/// queries being each sequence's last keys). Allocates nothing per dense sequence.
pub fn fwd_layout(dims: &Dims, keys: &KeySpec, cu: Option<&[u32]>, cache: Option<&CacheKeys<'_>>) -> Result<Lay, ()> {
    let (b, t) = (dims.b, dims.t);
    let queries = match cu {
        None => Queries::Dense { n: b, t },
        Some(cu) => {
            let ok = cu.len() as u64 == b as u64 + 1
                && cu.first() == Some(&0)
                && cu.last() == Some(&t)
                && cu.windows(2).all(|w| w[0] <= w[1]);
            if !ok {
                return Err(());
            }
            Queries::Packed(cu.windows(2).map(|w| w[1] - w[0]).collect())
        }
    };
    let n_seqs = match &queries {
        Queries::Dense { n, .. } => *n as u64,
        Queries::Packed(q) => q.len() as u64,
    };
    let query = |i: usize| match &queries {
        Queries::Dense { t, .. } => *t as u64,
        Queries::Packed(q) => q[i] as u64,
    };
    // Keys per sequence: `Err` unless every sequence has at least its queries.
    let explicit: Option<Vec<u64>> = match (cache, keys) {
        (Some(c), _) if !c.matches => return Err(()),
        (Some(c), _) => Some(c.lengths.iter().map(|x| *x as u64).collect()),
        (None, KeySpec::Lengths(l)) => Some(l.iter().map(|x| *x as u64).collect()),
        _ => None,
    };
    let (k_sum, k_max) = match (&explicit, keys) {
        (Some(k), _) => {
            if k.len() as u64 != n_seqs || k.iter().enumerate().any(|(i, k)| query(i) > *k) {
                return Err(());
            }
            (k.iter().sum::<u64>(), k.iter().copied().max().unwrap_or(0))
        }
        (None, KeySpec::Prefix(p)) => {
            // Each sequence's queries plus the prefix, which must fit u32.
            let (sum, max) = match &queries {
                Queries::Dense { n, t } => ((*n as u64).saturating_mul(*t as u64 + *p as u64), if *n > 0 { *t as u64 + *p as u64 } else { 0 }),
                Queries::Packed(q) => (
                    q.iter().map(|x| *x as u64 + *p as u64).sum(),
                    q.iter().map(|x| *x as u64 + *p as u64).max().unwrap_or(0),
                ),
            };
            if max > U32 as u64 {
                return Err(());
            }
            (sum, max)
        }
        (None, _) => match &queries {
            Queries::Dense { n, t } => ((*n as u64).saturating_mul(*t as u64), if *n > 0 { *t as u64 } else { 0 }),
            Queries::Packed(q) => (q.iter().map(|x| *x as u64).sum(), q.iter().copied().max().unwrap_or(0) as u64),
        },
    };
    let (k_batch, k_tokens) = match (cache, cu) {
        (Some(c), _) => (b, c.capacity as u64),
        (None, Some(_)) => (1, k_sum),
        (None, None) => (b, k_max),
    };
    if k_tokens == 0 || k_tokens > U32 as u64 {
        return Err(());
    }
    let q_batch = if cu.is_some() { 1 } else { b };
    Ok(Lay { q_batch, q_tokens: t, k_batch, k_tokens: k_tokens as u32, queries })
}

/// Every violation of a forward call (`cache`: a call on a cache, whose bindings the model
/// already knows valid).
fn model_forward<'a>(m: &mut Model<'a>, attn: &Attention, c: &FwdCase, cache: Option<(&CacheCase, &CacheKeys<'_>)>) {
    let Dims { b, t, h, d, .. } = c.dims;
    let hkv = c.dims.hkv();
    m.shape(b, t, h, hkv, d);
    m.scale(c.scale, d);
    m.eps(c.eps);
    let Ok(lay) = fwd_layout(&c.dims, &c.keys, c.cu.as_deref(), cache.map(|x| x.1)) else {
        m.add(V::Shape);
        return;
    };
    let es = c.dtype.size();
    let qx = [lay.q_batch, lay.q_tokens, h];
    let kx = [lay.k_batch, lay.k_tokens, hkv];
    m.tensor("q", &c.q, qx, d, es, false);
    m.tensor("o", &c.o, qx, d, es, true);
    match cache {
        None => {
            m.tensor("k", &c.k, kx, d, es, false);
            m.tensor("v", &c.v, kx, d, es, false);
        }
        Some((cc, _)) => {
            if let Some((k, v)) = &cc.on {
                m.tensor("k cache", k, kx, d, es, false);
                m.tensor("v cache", v, kx, d, es, false);
            }
        }
    }
    let rows = lay.q_batch as u128 * h as u128 * lay.q_tokens as u128;
    m.rows(&c.rem, c.log_rem.as_ref(), rows, h as u128 * d as u128, es);
    m.aliasing();
    let tuning = match c.coop_block_n {
        Some(n) => ForwardTuning::default().with_coop_block_n(n),
        None => ForwardTuning::default(),
    };
    // The tensor-core kernels need k and v offsets and strides that are multiples of 8 (a
    // cache the library allocated is contiguous at offset 0: as aligned as its head dim).
    let (kn, vn) = if cache.is_some() { ("k cache", "v cache") } else { ("k", "v") };
    let aligned = |name| m.binding(name).is_none_or(|x| x.rel % 8 == 0 && x.strides.iter().all(|s| s % 8 == 0));
    let aligned = aligned(kn) && aligned(vn);
    match sbattn::ops::forward::plan::choose(attn.capabilities(), c.dtype, d, c.path, aligned, &tuning) {
        Err(e) => {
            m.v.extend(key(&e));
        }
        Ok(var) => {
            if var.path.is_cooperative() && m.limits.max_storage_buffers_per_shader_stage < 10 {
                m.known_bug = Some(COOP_BINDINGS_BUG);
            }
            // Work items (sequence, query tile), spread over x and z; heads along y.
            let work = lay.queries.tiles(var.tiles.block_m);
            let most = (m.limits.max_compute_workgroups_per_dimension as u128).max(1);
            let z = work.div_ceil(work.clamp(1, most)).max(1);
            m.grid(&[z, h as u128]);
            let seqs = match &lay.queries {
                Queries::Dense { n, .. } => *n as u128,
                Queries::Packed(q) => q.len() as u128,
            };
            // The schedule (2 words per work item, 4 per sequence) is one more storage binding,
            // checked against the limit like the tensors (a dense call over it runs split).
            if 4 * (2 * work + 4 * seqs) > m.limits.max_storage_buffer_binding_size as u128 {
                m.add(V::BindingLimit);
                *STATS.lock().unwrap_or_else(|e| e.into_inner()).entry("forward: schedule table past the binding limit (modelled)".into()).or_default() += 1;
            }
        }
    }
    // A dense call on its own k and v with a binding over the size limit runs as several
    // calls over ranges of sequences, heads and queries (ops/forward/split.rs; issue 12: "not
    // refused"), down to one query of one head of one sequence, whose key/value slice (all of
    // that sequence's keys of one kv head) cannot be split. So the limit (and a grid the
    // pieces may make small enough) is no reason to refuse when every such slice fits, and a
    // required one when one does not even without its binding's alignment slack; in between
    // it may go either way. Everything else (sizes, strides, aliasing of the whole call's
    // ranges) must hold as for one call.
    if cache.is_none() && c.cu.is_none() && m.v.contains(&V::BindingLimit) {
        // (Known bug: the split's offsets overflow; see SPLIT_OFFSET_BUG.)
        let past = |t: &Tensor, heads: u32, tokens: u32| {
            let s = strides_of(t.addr, tokens, heads, d);
            let ext = [lay.q_batch, tokens, heads];
            t.offset as u128 + span(ext, s, 1) > U64
        };
        let run_past = |r: Option<&Run>, len: u128| r.is_some_and(|r| r.offset as u128 + len > U64);
        let bias = match &c.rem {
            Rem::AddBias(r) => Some(r),
            _ => None,
        };
        let ret = match &c.rem {
            Rem::Return(r) => Some(r),
            _ => None,
        };
        if past(&c.q, h, lay.q_tokens)
            || past(&c.o, h, lay.q_tokens)
            || past(&c.k, hkv, lay.k_tokens)
            || past(&c.v, hkv, lay.k_tokens)
            || run_past(ret, rows)
            || run_past(c.log_rem.as_ref(), rows)
            || run_past(bias, h as u128 * d as u128)
        {
            m.skip = Some(SPLIT_OFFSET_BUG);
        }
        let lim = m.limits.max_storage_buffer_binding_size as u128;
        let align = m.limits.min_storage_buffer_offset_alignment.max(4) as u128;
        let (mut fits, mut cannot) = (true, false);
        for t in [&c.k, &c.v] {
            let st = strides_of(t.addr, lay.k_tokens, hkv, d)[1];
            let bytes = (lay.k_tokens as u128 - 1).saturating_mul(st).saturating_add(d as u128).saturating_mul(es as u128);
            let lo = bytes.next_multiple_of(4);
            fits &= lo + align <= lim;
            cannot |= lo > lim;
        }
        if !cannot {
            m.split = true;
            m.v.remove(&V::BindingLimit);
            m.maybe.insert(V::BindingLimit);
            if m.v.remove(&V::Grid) {
                m.maybe.insert(V::Grid);
            }
            if fits {
                m.maybe.remove(&V::BindingLimit);
            }
        }
    }
}

fn remainder<'b>(r: &Rem, bufs: &'b [wgpu::Buffer]) -> Remainder<'b> {
    match r {
        Rem::Discard => Remainder::Discard,
        Rem::Return(x) => Remainder::Return(buffer_ref(x, bufs)),
        Rem::AddToValue => Remainder::AddToValue,
        Rem::AddBias(x) => Remainder::AddBias(buffer_ref(x, bufs)),
    }
}

fn buffer_ref<'b>(r: &Run, bufs: &'b [wgpu::Buffer]) -> BufferRef<'b> {
    BufferRef::new(&bufs[r.buf]).at_offset(r.offset)
}

fn tensor_ref<'b>(t: &Tensor, bufs: &'b [wgpu::Buffer]) -> TensorRef<'b> {
    let b = &bufs[t.buf];
    match t.addr {
        Addr::Contiguous(l) => TensorRef::contiguous(b, l),
        Addr::Strided(s) => TensorRef::strided(b, s),
    }
    .at_offset(t.offset)
}

fn forward_call<'b>(c: &'b FwdCase, bufs: &'b [wgpu::Buffer]) -> Forward<'b> {
    let t = |x: &Tensor| tensor_ref(x, bufs);
    let f = Forward::new(c.dims.shape(), c.dtype, t(&c.q), t(&c.k), t(&c.v), t(&c.o));
    let f = match &c.keys {
        KeySpec::Queries => f,
        KeySpec::Prefix(p) => f.with_keys(Keys::Prefix(*p)),
        KeySpec::Lengths(l) => f.with_keys(Keys::Lengths(l)),
    };
    forward_options(f, c, bufs)
}

/// A forward call on `cache` (`Forward::on_cache`).
fn prefill_call<'b>(c: &'b FwdCase, cache: &'b KvCache, bufs: &'b [wgpu::Buffer]) -> Forward<'b> {
    let t = |x: &Tensor| tensor_ref(x, bufs);
    forward_options(Forward::on_cache(c.dims.shape(), c.dtype, t(&c.q), cache, t(&c.o)), c, bufs)
}

/// `f` with the options of `c` other than its keys.
fn forward_options<'b>(f: Forward<'b>, c: &'b FwdCase, bufs: &'b [wgpu::Buffer]) -> Forward<'b> {
    let mut f = f
        .with_mask(c.mask)
        .with_scale(c.scale)
        .with_remainder(remainder(&c.rem, bufs))
        .with_path(c.path)
        .with_early_exit(c.eps);
    if let Some(n) = c.coop_block_n {
        f = f.with_tuning(ForwardTuning::default().with_coop_block_n(n));
    }
    if let Some(r) = &c.log_rem {
        f = f.with_log_rem(buffer_ref(r, bufs));
    }
    match &c.cu {
        Some(cu) => f.with_varlen(cu),
        None => f,
    }
}

/// Every violation of a backward call.
fn model_backward(m: &mut Model<'_>, attn: &Attention, c: &BwdCase) {
    let f = &c.fwd;
    let Dims { b, t, h, d, .. } = f.dims;
    let hkv = f.dims.hkv();
    m.shape(b, t, h, hkv, d);
    m.scale(f.scale, d);
    let es = f.dtype.size();
    let rows = b as u128 * h as u128 * t as u128;
    let bias_len = h as u128 * d as u128;
    m.tensor("q", &f.q, [b, t, h], d, es, false);
    m.tensor("k", &f.k, [b, t, hkv], d, es, false);
    m.tensor("v", &f.v, [b, t, hkv], d, es, false);
    m.tensor("o", &f.o, [b, t, h], d, es, false);
    m.tensor("d_o", &c.d_o, [b, t, h], d, es, false);
    match &f.log_rem {
        Some(r) => m.run("log_rem", r, rows, 4, false),
        None => m.add(V::Param("log_rem")),
    }
    match (&f.rem, &c.d_rem) {
        (Rem::Return(_), Some(r)) => m.run("d_rem", r, rows, 4, false),
        (Rem::Return(_), None) | (_, Some(_)) => m.add(V::Param("d_rem")),
        _ => {}
    }
    match (&f.rem, &c.d_bias) {
        (Rem::AddBias(bias), Some(db)) => {
            m.run("bias", bias, bias_len, es, false);
            m.run("d_bias", db, bias_len, 4, true);
        }
        (Rem::AddBias(_), None) | (_, Some(_)) => m.add(V::Param("d_bias")),
        _ => {}
    }
    m.tensor("dq", &c.dq, [b, t, h], d, es, true);
    m.tensor("dk", &c.dk, [b, t, hkv], d, es, true);
    m.tensor("dv", &c.dv, [b, t, hkv], d, es, true);
    m.aliasing();
    match attn.backward_variant(f.dtype, d, f.path) {
        Err(e) => m.v.extend(key(&e)),
        Ok(var) => {
            let block = var.tiles.block as u128;
            let (t, bh) = (t as u128, b as u128 * h as u128);
            let n_ktiles = t.div_ceil(block);
            let n_ptiles = t.div_ceil(64);
            // The scratch (docs: 16 B H T bytes of rows, 8 B H T ceil(T / block) of carries,
            // 4 B ceil(T / 64) H D of partials for AddBias), in f32 words.
            let words = 4 * bh * t + 2 * bh * n_ktiles * t + if matches!(f.rem, Rem::AddBias(_)) { bh * n_ptiles * d as u128 } else { 0 };
            let max_bind = m.limits.max_storage_buffer_binding_size.min(m.limits.max_buffer_size) as u128;
            if words * 4 > max_bind || words > U32 {
                m.add(V::Limit);
            }
            m.grid(&[n_ktiles, n_ptiles, h as u128, b as u128]);
        }
    }
}

fn backward_call<'b>(c: &'b BwdCase, bufs: &'b [wgpu::Buffer]) -> Backward<'b> {
    let fwd = forward_call(&c.fwd, bufs);
    let t = |x: &Tensor| tensor_ref(x, bufs);
    let mut call = Backward::new(&fwd, t(&c.d_o), t(&c.dq), t(&c.dk), t(&c.dv)).with_path(c.fwd.path);
    if let Some(r) = &c.d_rem {
        call = call.with_d_rem(buffer_ref(r, bufs));
    }
    if let Some(r) = &c.d_bias {
        call = call.with_d_bias(buffer_ref(r, bufs));
    }
    call
}

/// Violations of making the cache.
fn model_cache_new(m: &mut Model<'_>, attn: &Attention, c: &CacheCase) {
    dtype_check(m, attn, c.dtype);
    if c.batch == 0 || c.kv_heads == 0 || c.capacity == 0 {
        m.add(V::Shape);
    }
    if c.head_dim == 0 || c.head_dim > 256 {
        m.add(V::HeadDim);
    }
    let es = c.dtype.size() as u128;
    let lim = m.limits.max_buffer_size as u128;
    // The lengths buffer, 4 B bytes.
    if (4 * c.batch as u128).max(4).next_multiple_of(4) > lim {
        m.add(V::Limit);
    }
    let ext = [c.batch, c.capacity, c.kv_heads];
    match &c.on {
        None => {
            let bytes = c.batch as u128 * c.kv_heads as u128 * c.capacity as u128 * c.head_dim as u128 * es;
            if bytes > lim {
                m.add(V::Limit);
            }
            // Buffers the library makes hold exactly the contiguous tensors: only binding limits
            // and u32 indices can refuse them.
            let s = strides_of(Addr::Contiguous(c.layout), c.capacity, c.kv_heads, c.head_dim);
            let elems = span(ext, s, c.head_dim as u128) + 1;
            if elems * es > m.limits.max_storage_buffer_binding_size as u128 {
                m.add(V::BindingLimit);
            }
            if elems > U32 + 1 {
                m.add(V::Stride("k cache"));
                m.add(V::Stride("v cache"));
            }
        }
        Some((k, v)) => {
            m.tensor("k cache", k, ext, c.head_dim, es as u64, true);
            m.tensor("v cache", v, ext, c.head_dim, es as u64, true);
            // Both written.
            m.aliasing();
        }
    }
}

/// What a cache case's call sequence is made of, with the model's lengths.
struct CacheState {
    lengths: Vec<u32>,
}

fn model_set_lengths(m: &mut Model<'_>, c: &CacheCase, lengths: &[u32]) {
    if lengths.len() != c.batch as usize {
        m.add(V::HostData("lengths"));
    }
    if lengths.iter().any(|l| *l > c.capacity) {
        m.add(V::CacheOverflow);
    }
    if (4 * lengths.len() as u128).max(4) > m.limits.max_buffer_size as u128 {
        m.add(V::Limit);
    }
}

fn model_append(m: &mut Model<'_>, c: &CacheCase, st: &CacheState, k: &Tensor, v: &Tensor, tokens: u32, counts: &Option<Vec<u32>>) {
    if tokens == 0 {
        m.add(V::Shape);
    }
    let counts: Vec<u32> = match counts {
        Some(x) if x.len() != c.batch as usize => {
            m.add(V::HostData("counts"));
            x.clone()
        }
        Some(x) => x.clone(),
        None => vec![tokens; c.batch as usize],
    };
    for (cnt, len) in counts.iter().zip(&st.lengths) {
        if *cnt > tokens {
            m.add(V::Shape);
        }
        if *len as u64 + *cnt as u64 > c.capacity as u64 {
            m.add(V::CacheOverflow);
        }
    }
    let es = c.dtype.size();
    m.tensor("k", k, [c.batch, tokens, c.kv_heads], c.head_dim, es, false);
    m.tensor("v", v, [c.batch, tokens, c.kv_heads], c.head_dim, es, false);
    cache_bindings(m, c);
    m.aliasing();
    m.grid(&[c.kv_heads as u128, c.batch as u128]);
    if (4 * c.batch as u128).max(4) > m.limits.max_buffer_size as u128 {
        m.add(V::Limit);
    }
}

/// The cache's own bindings (valid: the cache was made), read by decode, written by appends.
fn cache_bindings(m: &mut Model<'_>, c: &CacheCase) {
    let es = c.dtype.size();
    let ext = [c.batch, c.capacity, c.kv_heads];
    if let Some((k, v)) = &c.on {
        m.tensor("k cache", k, ext, c.head_dim, es, true);
        m.tensor("v cache", v, ext, c.head_dim, es, true);
    }
}

fn model_decode(m: &mut Model<'_>, attn: &Attention, c: &CacheCase, st: &CacheState, s: &DecodeStep, cache: &KvCache) {
    let n = s.n;
    if n == 0 || n > 16 {
        m.add(V::Shape);
    }
    if m.limits.max_storage_buffers_per_shader_stage < 10 {
        m.known_bug = Some(MERGE_BINDINGS_BUG);
    }
    m.shape(c.batch, n, s.heads, c.kv_heads, c.head_dim);
    m.scale(s.scale, c.head_dim);
    m.eps(s.eps);
    let l = m.limits;
    let most = 4096.min(l.max_compute_workgroups_per_dimension);
    if s.splits.is_some_and(|sp| !(1..=most).contains(&sp)) {
        m.add(V::Param("splits"));
    }
    if st.lengths.iter().any(|len| *len < n) {
        m.add(V::Shape);
    }
    let es = c.dtype.size();
    let (b, h, d) = (c.batch, s.heads, c.head_dim);
    m.tensor("q", &s.q, [b, n, h], d, es, false);
    m.tensor("o", &s.o, [b, n, h], d, es, true);
    // The cache, read here (bound as written tensors when it was made).
    let (kb, vb) = match &c.on {
        Some((k, v)) => {
            let ext = [c.batch, c.capacity, c.kv_heads];
            m.tensor("k cache", k, ext, d, es, false);
            m.tensor("v cache", v, ext, d, es, false);
            (m.binding("k cache"), m.binding("v cache"))
        }
        None => (None, None),
    };
    let rows = b as u128 * h as u128 * n as u128;
    m.rows(&s.rem, s.log_rem.as_ref(), rows, h as u128 * d as u128, es);
    m.aliasing();
    if !m.v.is_empty() {
        return; // the plan below needs a valid shape
    }
    // Loads as wide as the largest power of two (up to 8) dividing the head dim and every
    // binding offset and stride of both caches.
    let cache_bits = |x: Option<Bound>| -> u128 { x.map_or(0, |x| x.rel | x.strides[0] | x.strides[1] | x.strides[2]) };
    let own = |t: &TensorRef<'_>| -> u128 {
        // KvCache::new: contiguous buffers at offset 0.
        let s = t.strides(c.capacity, c.kv_heads, d);
        let ext = [c.batch, c.capacity, c.kv_heads];
        let mut bits = 0;
        for (e, x) in ext.iter().zip([s.batch, s.token, s.head]) {
            if *e > 1 {
                bits |= x as u128;
            }
        }
        bits
    };
    let bits = d as u128 | if c.on.is_some() { cache_bits(kb) | cache_bits(vb) } else { own(&cache.k()) | own(&cache.v()) };
    let widest = Load::widest(c.dtype, 1 << bits.trailing_zeros().min(3));
    let group = h / c.kv_heads;
    let rows_needed = group.saturating_mul(n);
    let tuning = s.tuning();
    match sbattn::ops::decode::plan::choose_variant(attn.capabilities(), c.dtype, d, rows_needed, widest, s.path, &tuning) {
        Err(e) => m.v.extend(key(&e)),
        Ok(var) => {
            let row_blocks = rows_needed.div_ceil(var.rows);
            let ac = (s.mask == Mask::IncludeCurrent) as u32;
            let max_keys = st.lengths.iter().map(|len| len - 1 + ac).max().unwrap_or(0);
            let base = c.batch.saturating_mul(c.kv_heads).saturating_mul(row_blocks);
            let splits = s.splits.unwrap_or_else(|| sbattn::ops::decode::plan::choose_splits(attn.capabilities(), base, max_keys, &var));
            m.grid(&[splits as u128, c.kv_heads as u128 * row_blocks as u128, b as u128, h as u128 * n as u128]);
            let o_vec4s = rows * splits as u128 * var.row_vec4s() as u128;
            let max_bind = l.max_storage_buffer_binding_size.min(l.max_buffer_size) as u128;
            if 16 * o_vec4s > max_bind || o_vec4s > U32 {
                m.add(V::Limit);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Running a case
// ---------------------------------------------------------------------------------------------

/// The bytes each buffer of `case` gets: tensors on a `Fit` buffer need their bindings' ends.
fn buffer_sizes(case: &Case, env: &Env) -> Vec<u64> {
    let limits = &env.config.limits;
    let cap = BUFFER_CAP.min(limits.max_buffer_size);
    // Needed bytes per buffer, from a model run that records every binding's end.
    let mut need = vec![0u128; case.bufs.len()];
    let align = limits.min_storage_buffer_offset_alignment.max(4) as u128;
    // The end of the binding of `extents x strides` of `inner` elements at `offset`.
    let mut note = |buf: usize, offset: u64, extents: [u32; 3], strides: [u128; 3], inner: u128, es: u64| {
        let last = (offset as u128).saturating_add(span(extents, strides, inner));
        let end = last.saturating_add(1).saturating_mul(es as u128);
        let start = (offset as u128).saturating_mul(es as u128) / align * align;
        let end = start.saturating_add(end.saturating_sub(start).next_multiple_of(4));
        need[buf] = need[buf].max(end);
    };
    let mut tensor = |t: &Tensor, ext: [u32; 3], d: u32, es: u64| {
        let s = strides_of(t.addr, ext[1], ext[2], d);
        note(t.buf, t.offset, ext, s, d as u128, es);
    };
    let mut runs: Vec<(Run, u128, u64)> = Vec::new();
    match &case.op {
        Op::Forward(_) | Op::Backward(_) => {
            let f = match &case.op {
                Op::Backward(c) => &c.fwd,
                Op::Forward(f) => f,
                Op::Cache(_) => unreachable!(),
            };
            let Dims { b, t, h, d, .. } = f.dims;
            let hkv = f.dims.hkv();
            let es = f.dtype.size();
            // The extents of a valid description; those of the shape for others.
            let (qx, kx) = match fwd_layout(&f.dims, &f.keys, f.cu.as_deref(), None) {
                Ok(l) => ([l.q_batch, l.q_tokens, h], [l.k_batch, l.k_tokens, hkv]),
                Err(()) => ([b, t, h], [b, t, hkv]),
            };
            for (x, ext) in [(&f.q, qx), (&f.k, kx), (&f.v, kx), (&f.o, qx)] {
                tensor(x, ext, d, es);
            }
            let rows = qx[0] as u128 * h as u128 * t as u128;
            match f.rem {
                Rem::Return(r) => runs.push((r, rows, 4)),
                Rem::AddBias(r) => runs.push((r, h as u128 * d as u128, es)),
                _ => {}
            }
            if let Some(r) = f.log_rem {
                runs.push((r, rows, 4));
            }
            if let Op::Backward(c) = &case.op {
                for (x, heads) in [(&c.d_o, h), (&c.dq, h), (&c.dk, hkv), (&c.dv, hkv)] {
                    tensor(x, [b, t, heads], d, es);
                }
                if let Some(r) = c.d_rem {
                    runs.push((r, rows, 4));
                }
                if let Some(r) = c.d_bias {
                    runs.push((r, h as u128 * d as u128, 4));
                }
            }
        }
        Op::Cache(c) => {
            let es = c.dtype.size();
            if let Some((k, v)) = &c.on {
                tensor(k, [c.batch, c.capacity, c.kv_heads], c.head_dim, es);
                tensor(v, [c.batch, c.capacity, c.kv_heads], c.head_dim, es);
            }
            for s in &c.steps {
                match s {
                    Step::Append { k, v, tokens, .. } => {
                        tensor(k, [c.batch, *tokens, c.kv_heads], c.head_dim, es);
                        tensor(v, [c.batch, *tokens, c.kv_heads], c.head_dim, es);
                    }
                    Step::Decode(s) => {
                        tensor(&s.q, [c.batch, s.n, s.heads], c.head_dim, es);
                        tensor(&s.o, [c.batch, s.n, s.heads], c.head_dim, es);
                        let rows = c.batch as u128 * s.heads as u128 * s.n as u128;
                        match s.rem {
                            Rem::Return(r) => runs.push((r, rows, 4)),
                            Rem::AddBias(r) => runs.push((r, s.heads as u128 * c.head_dim as u128, es)),
                            _ => {}
                        }
                        if let Some(r) = s.log_rem {
                            runs.push((r, rows, 4));
                        }
                    }
                    Step::Prefill(f) => {
                        let Dims { b, t, h, d, .. } = f.dims;
                        let qx = [if f.cu.is_some() { 1 } else { b }, t, h];
                        let es = f.dtype.size();
                        tensor(&f.q, qx, d, es);
                        tensor(&f.o, qx, d, es);
                        let rows = qx[0] as u128 * h as u128 * t as u128;
                        match f.rem {
                            Rem::Return(r) => runs.push((r, rows, 4)),
                            Rem::AddBias(r) => runs.push((r, h as u128 * d as u128, es)),
                            _ => {}
                        }
                        if let Some(r) = f.log_rem {
                            runs.push((r, rows, 4));
                        }
                    }
                    Step::SetLengths(_) => {}
                }
            }
        }
    }
    let _ = tensor; // (its borrow of `note` ends here)
    for (r, len, es) in runs {
        note(r.buf, r.offset, [1, 1, 1], [0; 3], len, es);
    }
    case.bufs
        .iter()
        .zip(&need)
        .map(|(b, &n)| {
            let fit = |x: u128| if x <= cap as u128 { Some(x as u64) } else { None };
            let n = n.max(4);
            match b.size {
                Size::Fit => fit(n).unwrap_or(64),
                Size::Short(k) => fit(n).map_or(64, |x| x.saturating_sub(k)),
                Size::Long(k) => fit(n + k as u128).unwrap_or(cap),
                Size::Raw(x) => x.min(cap),
            }
        })
        .collect()
}

/// Buffers of `case` on `env`'s device.
fn make_buffers(env: &Env, sizes: &[u64], storage: &[bool]) -> Vec<wgpu::Buffer> {
    sizes
        .iter()
        .zip(storage)
        .map(|(&size, &st)| {
            let usage = if st { wgpu::BufferUsages::STORAGE } else { wgpu::BufferUsages::UNIFORM } | wgpu::BufferUsages::COPY_DST;
            env.device.create_buffer(&wgpu::BufferDescriptor { label: Some("fuzz"), size, usage, mapped_at_creation: false })
        })
        .collect()
}

/// How often each op was accepted or refused with each kind of error (for the report of a
/// run: a fuzzer whose calls are all refused tests little).
static STATS: std::sync::Mutex<std::collections::BTreeMap<String, u64>> = std::sync::Mutex::new(std::collections::BTreeMap::new());

fn count(op: &str, result: &Result<(), Error>) {
    let what = match result {
        Ok(()) => format!("{op}: accepted"),
        Err(e) => match key(e) {
            Some(k) => format!("{op}: {k:?}"),
            None => format!("{op}: {}", e.to_string().lines().next().unwrap_or_default()),
        },
    };
    *STATS.lock().unwrap_or_else(|e| e.into_inner()).entry(what).or_default() += 1;
}

/// The outcomes counted so far (and resets them): `op: accepted` or `op: <error kind>`.
pub fn take_stats() -> std::collections::BTreeMap<String, u64> {
    std::mem::take(&mut *STATS.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Tolerated (a library bug, reported; work in progress elsewhere when found): the decode merge
/// kernel binds 10 storage buffers (ops/decode/plan.rs `MERGE_BINDINGS`, the partial-result
/// outputs `po`, `ps` added), more than WebGPU's default `max_storage_buffers_per_shader_stage`
/// of 8, so on such a device (the `bare` config; browsers) every decode gets
/// `Error::Device` ("PipelineLayout .. is invalid") from compiling the merge kernel.
pub const MERGE_BINDINGS_BUG: &str = "decode merge kernel over 8 storage bindings";

/// Tolerated (a library bug, reported): the same for the cooperative-matrix forward kernels
/// (ops/forward/plan.rs `COOP_BINDINGS`: 10 storage buffers with the schedule), forced on a
/// device with 8 (`KernelPath::EmulatedCooperativeMatrix` on the `desktop` config): no
/// `Error::Unsupported` or `Limit`, but `Error::Device` from the pipeline layout. Neither
/// `plan::choose` nor `check_workgroup` looks at `max_storage_buffers_per_shader_stage`.
pub const COOP_BINDINGS_BUG: &str = "cooperative-matrix forward kernel over 8 storage bindings";

/// Compares the library's answer with the model's (`m.v` must refuse, `m.maybe` may);
/// returns what is wrong.
fn judge(what: &str, result: &Result<(), Error>, m: &Model<'_>) -> Result<(), String> {
    let op = what.rsplit("] ").next().unwrap_or(what).split(' ').next().unwrap_or(what);
    if !(m.known_bug.is_some() && matches!(result, Err(Error::Device { .. }))) {
        count(op, result);
    }
    if m.split && result.is_ok() {
        count(&format!("{op} (split)"), result);
    }
    let v = &m.v;
    match result {
        Ok(()) if v.is_empty() => Ok(()),
        Ok(()) => {
            let unsafe_ = v.iter().any(V::unsafe_kind);
            Err(format!("{}{what}: accepted, but the model finds {v:?}", if unsafe_ { "UNSAFE: " } else { "" }))
        }
        Err(e) => {
            let k = key(e);
            match k {
                None if matches!(e, Error::Device { .. }) && m.known_bug.is_some() => {
                    *STATS.lock().unwrap_or_else(|e| e.into_inner())
                        .entry(format!("{op}: Device error of a known bug ({})", m.known_bug.unwrap_or_default()))
                        .or_default() += 1;
                    Ok(())
                }
                None => Err(format!("{what}: error {e:?} ({e}) is never allowed")),
                Some(k) if v.contains(&k) || m.maybe.contains(&k) => Ok(()),
                // The planners' own limits (workgroup memory and sizes) are the library's to
                // choose: any refusal over its limit is fine on a call the model accepts.
                Some(V::Limit) if v.is_empty() => match e {
                    Error::Limit { value, limit, .. } if value > limit => Ok(()),
                    _ => Err(format!("{what}: {e:?} is not over its limit")),
                },
                Some(k) => Err(format!("{what}: error {e:?} ({e}) as {k:?}, but the model finds only {v:?} (and maybe {:?})", m.maybe)),
            }
        }
    }
}

/// Finishes `encoder` inside a validation scope: the library must leave it valid.
fn finish(env: &Env, encoder: wgpu::CommandEncoder, what: &str) -> Result<(), String> {
    let scope = env.device.push_error_scope(wgpu::ErrorFilter::Validation);
    let buf = encoder.finish();
    env.queue.submit([buf]);
    match pollster::block_on(scope.pop()) {
        None => Ok(()),
        Some(e) => Err(format!("{what}: the encoder is invalid after the call: {e}")),
    }
}

/// Excluded (a library bug, reported): `Attention::forward` lays out its sequences and its
/// schedule (`ops::forward::Layout::of` and `Layout::schedule`: a `Vec` entry per sequence and
/// one per (sequence, query tile)) before it checks any tensor against its buffer or the grid
/// against its limit, so a shape with a huge batch or `B x T` allocates gigabytes on the host
/// (`batch = u32::MAX` aborts the process: "memory allocation of 34359738360 bytes failed")
/// where it should return `BufferTooSmall` or `Limit`. Cases whose schedule would have more
/// than 2^20 work items (at the smallest query tile, 16 rows) are skipped.
pub const FORWARD_ALLOCATION_BUG: &str = "forward allocates per sequence and tile before validating";

/// Excluded (a library bug, reported): `ops::forward::Layout::of` formats its error for
/// `cu_seqlens` of the wrong length with `s.batch() + 1`, which overflows `u32` (a panic in
/// debug builds) when the batch is `u32::MAX`.
pub const CU_SEQLENS_MESSAGE_BUG: &str = "forward cu_seqlens error message overflows at batch u32::MAX";

/// Excluded (a library bug, reported): `ops::forward::split::halves` moves each piece's
/// offsets with unchecked `u64` arithmetic (`x.offset + b * st.batch + ...`, split.rs, the
/// `at` closure; `r.offset + first` for the row outputs), which panics in debug builds and
/// wraps in release when a call over the binding limit has an offset or stride whose products
/// pass 2^64 (the unsplit call refuses such a tensor with `Error::Stride`). Calls over the
/// binding limit with such a tensor are skipped.
pub const SPLIT_OFFSET_BUG: &str = "forward split moves offsets without overflow checks";

/// Why a forward call is skipped (a known library bug), if it is.
pub fn forward_skip(c: &FwdCase) -> Option<&'static str> {
    if c.cu.is_none() && c.dims.b as u128 * (c.dims.t as u128).div_ceil(16) > 1 << 20 {
        return Some(FORWARD_ALLOCATION_BUG);
    }
    if c.cu.is_some() && c.dims.b == u32::MAX {
        return Some(CU_SEQLENS_MESSAGE_BUG);
    }
    None
}

/// Counts a case skipped for `why`.
fn skipped(op: &str, why: &str) {
    *STATS.lock().unwrap_or_else(|e| e.into_inner()).entry(format!("{op}: skipped ({why})")).or_default() += 1;
}

/// Runs `case` and checks it against the model (see the module docs).
pub fn check_case(case: &Case) -> Result<(), String> {
    let env = env(case.config);
    let fresh;
    let attn = if case.fresh {
        fresh = Attention::from_adapter(&env.adapter, &env.device, &env.queue);
        &fresh
    } else {
        &env.shared
    };
    let limits = &env.config.limits;
    let sizes = buffer_sizes(case, env);
    let storage: Vec<bool> = case.bufs.iter().map(|b| b.storage).collect();
    let bufs = make_buffers(env, &sizes, &storage);
    let new_model = || Model::new(limits, &sizes, &storage);
    let mut log = String::new();
    let _ = write!(log, "[{} sizes {sizes:?}] ", env.config.name);
    match &case.op {
        Op::Forward(c) => {
            if let Some(why) = forward_skip(c) {
                skipped("forward", why);
                return Ok(());
            }
            let mut m = new_model();
            model_forward(&mut m, attn, c, None);
            if let Some(why) = m.skip {
                skipped("forward", why);
                return Ok(());
            }
            let mut enc = env.device.create_command_encoder(&Default::default());
            let r = attn.forward(&mut enc, &forward_call(c, &bufs));
            judge(&format!("{log}forward"), &r, &m)?;
            if m.known_bug.is_some() && matches!(r, Err(Error::Device { .. })) {
                return Ok(()); // the known bug also leaves the encoder invalid
            }
            finish(env, enc, "forward")
        }
        Op::Backward(c) => {
            let mut m = new_model();
            model_backward(&mut m, attn, c);
            let mut enc = env.device.create_command_encoder(&Default::default());
            let r = attn.backward(&mut enc, &backward_call(c, &bufs));
            judge(&format!("{log}backward"), &r, &m)?;
            finish(env, enc, "backward")
        }
        Op::Cache(c) => {
            let mut m = new_model();
            model_cache_new(&mut m, attn, c);
            let desc = KvCacheDesc::new(c.batch, c.kv_heads, c.head_dim, c.capacity, c.dtype).with_layout(c.layout);
            let made = match &c.on {
                None => KvCache::new(attn, desc),
                Some((k, v)) => {
                    let owned = |t: &Tensor| CacheTensor {
                        buffer: bufs[t.buf].clone(),
                        offset: t.offset,
                        strides: {
                            let s = strides_of(t.addr, c.capacity, c.kv_heads, c.head_dim).map(|x| x.min(U64) as u64);
                            Strides { batch: s[0], token: s[1], head: s[2] }
                        },
                    };
                    KvCache::from_buffers(attn, desc, owned(k), owned(v))
                }
            };
            let result = made.as_ref().map(|_| ()).map_err(Clone::clone);
            judge(&format!("{log}cache"), &result, &m)?;
            let Ok(mut cache) = made else { return Ok(()) };
            let mut st = CacheState { lengths: vec![0; c.batch as usize] };
            for (i, step) in c.steps.iter().enumerate() {
                let mut m = new_model();
                let mut enc = env.device.create_command_encoder(&Default::default());
                let kind = match step {
                    Step::SetLengths(_) => "set_lengths",
                    Step::Append { .. } => "append",
                    Step::Decode(_) => "decode",
                    Step::Prefill(_) => "prefill",
                };
                let what = format!("{log}{kind} (step {i})");
                let mut step_result = None;
                match step {
                    Step::SetLengths(lengths) => {
                        model_set_lengths(&mut m, c, lengths);
                        let r = cache.set_lengths(attn, &mut enc, lengths);
                        judge(&what, &r, &m)?;
                        if r.is_ok() {
                            st.lengths = lengths.clone();
                        }
                    }
                    Step::Append { k, v, tokens, counts } => {
                        model_append(&mut m, c, &st, k, v, *tokens, counts);
                        let mut call = Append::new(tensor_ref(k, &bufs), tensor_ref(v, &bufs), *tokens);
                        if let Some(x) = counts {
                            call = call.with_counts(x);
                        }
                        let r = attn.append(&mut enc, &mut cache, &call);
                        judge(&what, &r, &m)?;
                        if r.is_ok() {
                            let add = counts.clone().unwrap_or_else(|| vec![*tokens; c.batch as usize]);
                            for (l, a) in st.lengths.iter_mut().zip(add) {
                                *l += a;
                            }
                        }
                    }
                    Step::Prefill(f) => {
                        if let Some(why) = forward_skip(f) {
                            skipped("prefill", why);
                            continue;
                        }
                        let d = f.dims;
                        let matches = d.b == c.batch && d.hkv() == c.kv_heads && d.d == c.head_dim && f.dtype == c.dtype;
                        let keys = CacheKeys { matches, capacity: c.capacity, lengths: &st.lengths };
                        // A few queries on a cache go to the decode kernels (ops/forward: `as_decode`),
                        // with decode's checks once the description is valid.
                        let to_decode = f.cu.is_none() && f.path == KernelPath::Auto && f.coop_block_n.is_none() && f.dims.t <= 16;
                        if !to_decode {
                            model_forward(&mut m, attn, f, Some((c, &keys)));
                        } else {
                            let Dims { b, t, h, d, .. } = f.dims;
                            m.shape(b, t, h, f.dims.hkv(), d);
                            if fwd_layout(&f.dims, &f.keys, None, Some(&keys)).is_err() {
                                m.add(V::Shape);
                            }
                            if m.v.is_empty() {
                                let step = DecodeStep {
                                    heads: h,
                                    n: t,
                                    q: f.q,
                                    o: f.o,
                                    mask: f.mask,
                                    scale: f.scale,
                                    rem: f.rem,
                                    log_rem: f.log_rem,
                                    path: KernelPath::Auto,
                                    eps: f.eps,
                                    splits: None,
                                    lanes: None,
                                    load: None,
                                    keys_per_step: None,
                                };
                                model_decode(&mut m, attn, c, &st, &step, &cache);
                            }
                        }
                        let r = attn.forward(&mut enc, &prefill_call(f, &cache, &bufs));
                        judge(&what, &r, &m)?;
                        step_result = Some(r);
                    }
                    Step::Decode(s) => {
                        model_decode(&mut m, attn, c, &st, s, &cache);
                        let t = |x: &Tensor| tensor_ref(x, &bufs);
                        let mut call = Decode::new(&cache, s.heads, s.n, t(&s.q), t(&s.o))
                            .with_mask(s.mask)
                            .with_scale(s.scale)
                            .with_remainder(remainder(&s.rem, &bufs))
                            .with_path(s.path)
                            .with_early_exit(s.eps);
                        call.tuning = s.tuning();
                        if let Some(r) = &s.log_rem {
                            call = call.with_log_rem(buffer_ref(r, &bufs));
                        }
                        let plan = attn.decode_plan(&call).map(|_| ());
                        let r = attn.decode(&mut enc, &call);
                        if plan.is_ok() != r.is_ok() && !(m.known_bug.is_some() && matches!(r, Err(Error::Device { .. }))) {
                            return Err(format!("{what}: decode_plan {plan:?} but decode {r:?}"));
                        }
                        judge(&what, &r, &m)?;
                        step_result = Some(r);
                    }
                }
                if m.known_bug.is_some() && matches!(step_result, Some(Err(Error::Device { .. }))) {
                    return Ok(()); // the known bug also leaves the encoder invalid
                }
                if cache.lengths() != st.lengths.as_slice() {
                    return Err(format!("{what}: host lengths {:?}, model {:?}", cache.lengths(), st.lengths));
                }
                finish(env, enc, &what)?;
            }
            Ok(())
        }
    }
}
