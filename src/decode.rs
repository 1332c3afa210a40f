//! Decode: a few new tokens per sequence against a KV cache, with the keys split into chunks
//! that run in parallel (split-K) and merge nearest-first (ALGORITHM.md, "Decode and split-K").
//!
//! Per layer and step, record into your encoder:
//! 1. [`Decoder::append`] the new tokens' `k` and `v` into the layer's [`KvCache`] (which
//!    advances the per-sequence lengths held on the GPU);
//! 2. [`Decoder::decode`] the new queries: query `i` of `n` is token `len - n + i` of its
//!    sequence and sees the keys before it (and itself with [`Mask::IncludeCurrent`]).
//!
//! Nothing is read back between steps. The cache keeps a host-side mirror of the lengths (the
//! host knows how many tokens it appended) to reject overflows before anything is encoded.
//!
//! ```no_run
//! # fn main() -> Result<(), sbattn::Error> {
//! use sbattn::{Append, Attention, Decode, Decoder, Dtype, KvCache, KvCacheDesc, TensorRef};
//! let attn = Attention::with_default_adapter_blocking()?;
//! let dev = attn.device();
//! let dec = Decoder::new(dev);
//! let (b, h, hkv, d) = (2, 32, 8, 128);
//! let mut cache = KvCache::new(dev, KvCacheDesc::new(b, hkv, d, 4096, Dtype::F16))?;
//! let buffer = |elems: u32| dev.create_buffer(&wgpu::BufferDescriptor {
//!     label: None, size: 2 * elems as u64, usage: wgpu::BufferUsages::STORAGE, mapped_at_creation: false,
//! });
//! // One new token per sequence: [B, 1, heads, D] tensors written by the layer's projections.
//! let (q, k, v, o) = (buffer(b * h * d), buffer(b * hkv * d), buffer(b * hkv * d), buffer(b * h * d));
//! let mut enc = dev.create_command_encoder(&Default::default());
//! let t = |buf, heads| TensorRef::bthd(buf, 1, heads, d);
//! dec.append(&mut enc, &mut cache, &Append::new(t(&k, hkv), t(&v, hkv), 1))?;
//! dec.decode(&mut enc, &Decode::new(&cache, h, 1, t(&q, h), t(&o, h)))?;
//! attn.queue().submit([enc.finish()]);
//! # Ok(()) }
//! ```
//!
//! Kernels: `shaders/decode.wgsl` (one workgroup per chunk x kv head x sequence: the kv head's
//! whole query group shares each K and V load; each key slot loads several keys per step
//! before using any), with one of `decode_load_vec8.wgsl` (16-byte loads of f16),
//! `decode_load_vec.wgsl` or `decode_load_scalar.wgsl` and one of `decode_subgroup.wgsl` or
//! `decode_shared.wgsl`; `shaders/decode_merge.wgsl` (one workgroup per query row, the chunks
//! spread over its invocations) and `shaders/kv_append.wgsl`. [`choose_variant`] and
//! [`choose_splits`] pick the kernel and the grid; [`Decode`]'s tuning fields force them.
//! Kernels compile with index clamping and without loop bounding, as the forward kernels do
//! ([`crate::ShaderChecks`]; see [`Decoder::with_full_runtime_checks`] and
//! [`Decoder::without_runtime_checks`]).

use std::sync::{Arc, Mutex};

use bytemuck::{Pod, Zeroable};
use wgpu::util::DeviceExt;

use crate::attention::{remainder_bindings, storage_entry, unused_bindings, Remainder};
use crate::pipelines::{PipelineSpec, Pipelines, ShaderChecks};
use crate::config::{Capabilities, WORKGROUP_SIZE};
use crate::params::{FLAG_ATTEND_CURRENT, FLAG_WRITE_LOG_REM, REM_SHIFT};
use crate::shader::{self, Target};
use crate::tensor::{self, Axis, Binding, BufferRef, TensorRef};
use crate::{Dtype, Error, Layout, Mask, Path, Result, Shape, Strides, MAX_HEAD_DIM};

/// The most new tokens (queries) per sequence one [`Decode`] call takes (speculative decoding).
pub const MAX_NEW_TOKENS: u32 = 16;

/// Bit 4 of the decode kernel's flags: early exit (bits 0..3 as in the forward kernel).
const FLAG_EARLY_EXIT: u32 = 16;
/// Query rows one decode workgroup holds at most (four vec4 "quads" of per-row values).
const MAX_ROWS: u32 = 16;
/// Named vec4 accumulators per thread (`a0..a15` in decode.wgsl): rows * cols <= this.
const MAX_ACCUMULATORS: u32 = 16;
/// vec4s of a key per lane (`Raw.u0..u7` hold up to 8 loads).
const MAX_COLS: u32 = 8;
/// Lanes per key the kernel is built for.
const LANES: [u32; 4] = [8, 16, 32, 64];
/// Keys per step the kernel is built for (`k0..k7`, `v0..v7` in decode.wgsl).
const KEYS_PER_STEP: [u32; 4] = [1, 2, 4, 8];
/// 32-bit registers per invocation the chooser gives the accumulators (`4 * rows * cols`).
/// With the loaded keys (below), addresses, carries and temporaries that stays near 96, under
/// the 128 at which two 256-invocation workgroups share a 64K-register multiprocessor (NVIDIA;
/// AMD's vector register files are similar): more resident workgroups keep more loads in
/// flight. A lead to check with `bench_decode`, not a measured optimum.
const ACCUMULATOR_REGISTERS: u32 = 32;
/// 32-bit registers per invocation the chooser gives the keys and values loaded per step
/// (`keys_per_step * 2 * cols * 4 * element size / 4`): the bytes each invocation has in
/// flight, the lever of a bandwidth-bound kernel. Same caveat as above.
const LOAD_REGISTERS: u32 = 32;
/// vec4s of the merge buffer in decode.wgsl (`NB = clamp(512 / RMP, 1, NK)`).
const MERGE_BUFFER_VEC4: u32 = 512;
/// Most chunks per sequence a caller may force.
const MAX_SPLITS: u32 = 4096;
/// Most chunks the automatic choice makes. Measured on an H200 (BENCHMARKS.md, 2026-11-29):
/// at B = 1 (8 kv heads), 32 chunks beat 128 by 8-20% at caches of 32768 and 131072 keys, and
/// the longer chunks never lost at B = 8 or 32; the merge also reads `splits` rows per query.
const AUTO_MAX_SPLITS: u32 = 32;
/// Fewest steps (of `keys_per_step` keys) each key slot of a workgroup should walk, so that
/// the workgroup's fixed costs (query tile, slot merge with its barriers, partial rows) stay
/// small next to the loads.
const MIN_STEPS_PER_SLOT: u32 = 4;
/// Invocations of the append workgroups (`AW` in kv_append.wgsl).
const SMALL_WG: u32 = 64;
/// Invocations of the merge workgroup (`MW` in decode_merge.wgsl).
const MERGE_WG: u32 = 256;

/// How the partial kernel reads the cache, narrowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Load {
    /// One element at a time: any head dim, offsets and strides.
    Scalar,
    /// Four elements per load (8 bytes in f16, 16 in f32): head dim, element offsets and
    /// strides of the cache multiples of 4.
    Vec4,
    /// Eight f16 per 16-byte load (`vec4<u32>`): head dim, element offsets and strides
    /// multiples of 8; f16 only (an f32 [`Load::Vec4`] is 16 bytes already).
    Vec8,
}

impl Load {
    /// Elements of one load.
    pub fn elements(self) -> u32 {
        match self {
            Load::Scalar => 1,
            Load::Vec4 => 4,
            Load::Vec8 => 8,
        }
    }

    /// Adjacent head-dim vec4s one load fills (`W` in decode.wgsl).
    pub fn vec4s(self) -> u32 {
        if self == Load::Vec8 { 2 } else { 1 }
    }

    /// The widest load a cache of `dtype` allows when its head dim and every element offset
    /// and stride are multiples of `multiple_of` elements.
    pub fn widest(dtype: Dtype, multiple_of: u32) -> Load {
        match multiple_of {
            m if m.is_multiple_of(8) && dtype == Dtype::F16 => Load::Vec8,
            m if m.is_multiple_of(4) => Load::Vec4,
            _ => Load::Scalar,
        }
    }
}

/// One compiled decode kernel: the pipeline cache's key and the tiles dispatch must match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DecodeVariant {
    /// Storage type of `q`, the cache and `o`.
    pub dtype: Dtype,
    /// Lane reduction path ([`Path::Subgroup`] or [`Path::SharedMemory`], never `Auto`).
    pub path: Path,
    /// How the cache is read.
    pub load: Load,
    /// Lanes per key, `P`: each holds `cols` vec4s of the key's head dim.
    pub lanes: u32,
    /// vec4s per lane, `M` (a multiple of `load.vec4s()`): the padded head dim is
    /// `4 * cols * lanes`.
    pub cols: u32,
    /// Query rows per workgroup, `R` (1, 2, 4, 8 or 16).
    pub rows: u32,
    /// Keys each key slot loads per step before using any, `U` (1, 2, 4 or 8).
    pub keys_per_step: u32,
}

impl DecodeVariant {
    /// Key slots of a workgroup, each walking its own part of the chunk.
    pub fn key_slots(&self) -> u32 {
        WORKGROUP_SIZE / self.lanes
    }

    /// vec4s of one padded head-dim row (`DP4`): the row length of the partial outputs.
    pub fn row_vec4s(&self) -> u32 {
        self.cols * self.lanes
    }

    /// Workgroup memory the kernel declares, in bytes (mirrors the constants of decode.wgsl).
    pub fn workgroup_bytes(&self) -> u32 {
        let rmp = self.rows * self.row_vec4s();
        let nb = (MERGE_BUFFER_VEC4 / rmp).clamp(1, self.key_slots());
        let quads = self.rows.div_ceil(4);
        let shared = if self.path == Path::SharedMemory { WORKGROUP_SIZE } else { 0 };
        16 * (nb * rmp + self.key_slots() * quads + shared)
    }

    /// 32-bit registers per invocation of the accumulators.
    fn accumulator_registers(&self) -> u32 {
        4 * self.rows * self.cols
    }

    /// 32-bit registers per invocation of one key's and one value's loads.
    fn key_registers(&self) -> u32 {
        2 * self.cols * self.dtype.size() as u32
    }
}

/// How a [`Decode`] call runs: the kernel, the split count and the grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodePlan {
    /// The partial (split-K) kernel.
    pub variant: DecodeVariant,
    /// Key chunks per sequence (grid x of the partial kernel).
    pub splits: u32,
    /// Workgroups per kv head along y: `ceil(heads / kv_heads * new_tokens / rows)`. Each reads
    /// the kv head's keys and values once, so more than 1 multiplies the bytes read.
    pub row_blocks: u32,
    /// Grid of the partial kernel.
    pub workgroups: [u32; 3],
}

/// Kernel choices a caller may force (for tuning and tests); `None` leaves each to
/// [`choose_variant`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Forced {
    /// Lanes per key: 8, 16, 32 or 64.
    pub lanes: Option<u32>,
    /// Cache loads, no wider than the cache allows.
    pub load: Option<Load>,
    /// Keys per step: 1, 2, 4 or 8.
    pub keys_per_step: Option<u32>,
}

/// Chooses the decode kernel for `rows_needed` query rows per kv head (group size times new
/// tokens) on a cache that allows loads up to `widest`, on the requested path.
///
/// [`Path::Auto`] (and [`Path::CooperativeMatrix`]: decode has no tensor-core kernel) takes the
/// subgroup path where the adapter allows it and it holds at least as many rows as the
/// shared-memory path. `forced` overrides the choices below one by one.
///
/// # Errors
/// [`Error::Unsupported`] for f16 without `SHADER_F16` or a subgroup path the adapter cannot
/// run, [`Error::InvalidParameter`] for a bad forced lane count, load or keys per step,
/// [`Error::Limit`] when no variant fits the device's workgroup memory.
pub fn choose_variant(
    caps: &Capabilities,
    dtype: Dtype,
    head_dim: u32,
    rows_needed: u32,
    widest: Load,
    requested: Path,
    forced: Forced,
) -> Result<DecodeVariant> {
    if dtype == Dtype::F16 && !caps.f16() {
        return Err(Error::Unsupported("f16 needs Features::SHADER_F16 on the device".into()));
    }
    if let Some(l) = forced.lanes.filter(|l| !LANES.contains(l)) {
        return Err(Error::InvalidParameter { name: "lanes_per_key", reason: format!("{l} is not one of {LANES:?}") });
    }
    if let Some(u) = forced.keys_per_step.filter(|u| !KEYS_PER_STEP.contains(u)) {
        return Err(Error::InvalidParameter { name: "keys_per_step", reason: format!("{u} is not one of {KEYS_PER_STEP:?}") });
    }
    // 16-byte loads of eight elements are f16 only (an f32 vec4 is 16 bytes already).
    let widest = if dtype == Dtype::F16 { widest } else { widest.min(Load::Vec4) };
    if let Some(l) = forced.load.filter(|l| *l > widest) {
        return Err(Error::InvalidParameter {
            name: "load",
            reason: format!("{l:?} is wider than this {dtype:?} cache allows ({widest:?}: head dim, offsets and strides)"),
        });
    }
    let (min_sg, max_sg) = (caps.adapter.subgroup_min_size, caps.adapter.subgroup_max_size);
    // Subgroup path: the lanes of a key must sit in one subgroup whatever size it runs at.
    let subgroup_lanes = (caps.features.contains(wgpu::Features::SUBGROUP)
        && min_sg.is_power_of_two()
        && max_sg <= WORKGROUP_SIZE)
        .then_some(min_sg);
    let l = &caps.limits;
    let best = |path: Path| -> Option<DecodeVariant> {
        let max_lanes = if path == Path::Subgroup { subgroup_lanes? } else { u32::MAX };
        // Rows first: as many as fit, since each row block re-reads all of K and V.
        let mut rows = rows_needed.clamp(1, MAX_ROWS).next_power_of_two();
        while rows >= 1 {
            // Then the widest load that fits (bytes in flight per instruction; the cache's
            // alignment bounds it), then the fewest lanes (fewer shuffle rounds, and fewer
            // lanes repeating each row's stick arithmetic) whose accumulators stay within
            // ACCUMULATOR_REGISTERS; failing that, the fewest accumulators, then lanes.
            let loads = [Load::Vec8, Load::Vec4, Load::Scalar];
            for load in loads.into_iter().filter(|x| forced.load.map_or(*x <= widest, |f| f == *x)) {
                let mut pick: Option<DecodeVariant> = None;
                for p in LANES.into_iter().filter(|p| forced.lanes.is_none_or(|l| l == *p) && *p <= max_lanes) {
                    let w = load.vec4s();
                    let cols = head_dim.div_ceil(4 * w * p).max(1) * w;
                    let v = DecodeVariant { dtype, path, load, lanes: p, cols, rows, keys_per_step: 1 };
                    let fits = cols <= MAX_COLS
                        && rows * cols <= MAX_ACCUMULATORS
                        && v.workgroup_bytes() <= l.max_compute_workgroup_storage_size;
                    let light = |v: &DecodeVariant| v.accumulator_registers() <= ACCUMULATOR_REGISTERS;
                    let better = match pick {
                        None => true,
                        Some(q) => (light(&v) && !light(&q)) || (!light(&q) && v.cols < q.cols),
                    };
                    if fits && better {
                        pick = Some(v);
                    }
                }
                if let Some(v) = pick {
                    // Then as many keys per step as LOAD_REGISTERS hold (at least one): each
                    // is a set of loads in flight before the first use. On CPU adapters one:
                    // a core has no memory latency worth that to hide, and the unrolled step
                    // multiplies llvmpipe's (lavapipe's) compile time.
                    let fit = KEYS_PER_STEP.into_iter().filter(|u| u * v.key_registers() <= LOAD_REGISTERS).max().unwrap_or(1);
                    let fit = if caps.adapter.device_type == wgpu::DeviceType::Cpu { 1 } else { fit };
                    return Some(DecodeVariant { keys_per_step: forced.keys_per_step.unwrap_or(fit), ..v });
                }
            }
            rows /= 2;
        }
        None
    };
    let chosen = match requested {
        Path::Subgroup if subgroup_lanes.is_none() => {
            return Err(Error::Unsupported(format!(
                "the subgroup path needs Features::SUBGROUP and power-of-two subgroups of at most {WORKGROUP_SIZE} \
                 invocations (adapter: {}, sizes {min_sg}..={max_sg})",
                caps.features.contains(wgpu::Features::SUBGROUP)
            )))
        }
        Path::Subgroup => best(Path::Subgroup),
        Path::SharedMemory => best(Path::SharedMemory),
        // Decode is bandwidth-bound: it has no tensor-core kernel, so a request for one picks
        // as `Auto` does.
        Path::Auto | Path::CooperativeMatrix => match (best(Path::Subgroup), best(Path::SharedMemory)) {
            (Some(s), Some(m)) if m.rows > s.rows => Some(m),
            (Some(s), _) => Some(s),
            (None, m) => m,
        },
    };
    chosen.ok_or_else(|| match forced.lanes {
        Some(p) if requested == Path::Subgroup && p > min_sg => {
            Error::Unsupported(format!("{p} lanes per key do not fit the adapter's minimum subgroup size {min_sg}"))
        }
        _ => {
            // Nothing fits the workgroup memory: report the smallest candidate.
            let p = forced.lanes.unwrap_or(LANES[0]);
            let path = if requested == Path::SharedMemory { requested } else { Path::Subgroup };
            let load = forced.load.unwrap_or(widest);
            let cols = head_dim.div_ceil(4 * p);
            let v = DecodeVariant { dtype, path, load, lanes: p, cols, rows: 1, keys_per_step: 1 };
            Error::Limit {
                what: "decode workgroup memory",
                value: v.workgroup_bytes() as u64,
                limit: l.max_compute_workgroup_storage_size as u64,
            }
        }
    })
}

/// Chooses how many chunks each sequence's keys are split into: enough workgroups to fill the
/// device (wgpu does not say how many compute units it has, so the target is a count that
/// fills a large GPU several times over, e.g. about 4 workgroups per multiprocessor of a
/// 132-multiprocessor H200 holding two each at a time, which keeps the last wave's idle share
/// small; and a handful on CPU adapters, where every workgroup runs on one of a few cores),
/// but never so many that a key slot walks fewer than `MIN_STEPS_PER_SLOT` steps of the
/// longest sequence.
///
/// `base_workgroups` is the grid without splitting: batch x kv heads x row blocks.
pub fn choose_splits(caps: &Capabilities, base_workgroups: u32, max_keys: u32, variant: &DecodeVariant) -> u32 {
    let target = match caps.adapter.device_type {
        wgpu::DeviceType::Cpu => 2 * std::thread::available_parallelism().map_or(4, |n| n.get() as u32),
        _ => 1024,
    };
    let want = target.div_ceil(base_workgroups.max(1));
    let per_workgroup = variant.key_slots() * variant.keys_per_step * MIN_STEPS_PER_SLOT;
    let most = max_keys.div_ceil(per_workgroup).max(1);
    want.min(most).clamp(1, AUTO_MAX_SPLITS)
}

/// Describes a KV cache to allocate: `[B, Hkv, capacity, D]` ([`Layout::Bhtd`], the default)
/// or `[B, capacity, Hkv, D]` ([`Layout::Bthd`]) for each of K and V.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KvCacheDesc {
    /// Sequences `B`.
    pub batch: u32,
    /// Key/value heads `Hkv`.
    pub kv_heads: u32,
    /// Head dim `D`, 1 to [`MAX_HEAD_DIM`].
    pub head_dim: u32,
    /// Tokens each sequence can hold.
    pub capacity: u32,
    /// Storage type.
    pub dtype: Dtype,
    /// Memory order of each of K and V.
    pub layout: Layout,
}

impl KvCacheDesc {
    /// A `[B, Hkv, capacity, D]` cache.
    pub fn new(batch: u32, kv_heads: u32, head_dim: u32, capacity: u32, dtype: Dtype) -> Self {
        KvCacheDesc { batch, kv_heads, head_dim, capacity, dtype, layout: Layout::Bhtd }
    }

    /// Bytes of each of K and V when allocated contiguously.
    pub fn tensor_bytes(&self) -> u64 {
        self.batch as u64 * self.kv_heads as u64 * self.capacity as u64 * self.head_dim as u64 * self.dtype.size()
    }

    fn validate(&self, device: &wgpu::Device) -> Result<()> {
        if self.dtype == Dtype::F16 && !device.features().contains(wgpu::Features::SHADER_F16) {
            return Err(Error::Unsupported("f16 needs Features::SHADER_F16 on the device".into()));
        }
        for (name, v) in [("batch", self.batch), ("kv_heads", self.kv_heads), ("capacity", self.capacity)] {
            if v == 0 {
                return Err(Error::Shape(format!("KV cache {name} is 0")));
            }
        }
        if self.head_dim == 0 || self.head_dim > MAX_HEAD_DIM {
            return Err(Error::HeadDim { head_dim: self.head_dim, max: MAX_HEAD_DIM });
        }
        Ok(())
    }
}

/// An owned strided tensor: a buffer, the element offset of `(0, 0, 0, 0)` and the element
/// strides of the batch, token and head axes (head dim contiguous), as [`TensorRef`].
#[derive(Clone, Debug)]
pub struct CacheTensor {
    /// The buffer (needs `BufferUsages::STORAGE`).
    pub buffer: wgpu::Buffer,
    /// Offset of element `(0, 0, 0, 0)`, in elements.
    pub offset: u64,
    /// Element strides; the token axis has `capacity` entries.
    pub strides: Strides,
}

impl CacheTensor {
    /// The tensor as a [`TensorRef`].
    pub fn as_ref(&self) -> TensorRef<'_> {
        TensorRef::new(&self.buffer, self.offset, self.strides)
    }
}

/// The K and V cache of one layer, with each sequence's current length.
///
/// Lengths live in a GPU buffer (`u32` per sequence) that [`Decoder::append`] advances and
/// [`Decoder::decode`] reads, so steps need no readback. The cache also keeps a host mirror of
/// them, advanced when an append is *recorded*: it is what capacity checks use, so an encoder
/// that is recorded but never submitted leaves the mirror ahead of the GPU (the GPU side then
/// only under-counts, which never writes out of bounds). Fix both with
/// [`KvCache::set_lengths`] in that case.
#[derive(Debug)]
pub struct KvCache {
    device: wgpu::Device,
    desc: KvCacheDesc,
    k: CacheTensor,
    v: CacheTensor,
    lengths: wgpu::Buffer,
    host_lengths: Vec<u32>,
}

impl KvCache {
    /// Allocates a zeroed, empty cache (K and V buffers with `STORAGE | COPY_SRC | COPY_DST`).
    ///
    /// # Errors
    /// [`Error::Shape`] or [`Error::HeadDim`] for a bad description, [`Error::Unsupported`] for
    /// f16 without `SHADER_F16`, [`Error::Limit`] when a buffer would exceed the device's limits.
    pub fn new(device: &wgpu::Device, desc: KvCacheDesc) -> Result<Self> {
        desc.validate(device)?;
        let limit = device.limits().max_buffer_size;
        let bytes = desc.tensor_bytes();
        if bytes > limit {
            return Err(Error::Limit { what: "KV cache buffer size", value: bytes, limit });
        }
        let strides = desc.layout.strides(desc.capacity, desc.kv_heads, desc.head_dim);
        let make = |label| CacheTensor {
            buffer: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes.next_multiple_of(4),
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            offset: 0,
            strides,
        };
        Self::from_buffers(device, desc, make("sbattn k cache"), make("sbattn v cache"))
    }

    /// A cache on the caller's buffers (any strides with a contiguous head dim; K and V must not
    /// overlap), empty.
    ///
    /// # Errors
    /// As [`KvCache::new`], plus every check of a written tensor: buffer usage and size, strides
    /// that would overlap, indices past `u32`, K and V sharing memory.
    pub fn from_buffers(device: &wgpu::Device, desc: KvCacheDesc, k: CacheTensor, v: CacheTensor) -> Result<Self> {
        desc.validate(device)?;
        let limits = device.limits();
        let kb = bind_cache("k cache", &desc, &k, &limits)?;
        let vb = bind_cache("v cache", &desc, &v, &limits)?;
        tensor::check_disjoint(("k cache", &kb, true), ("v cache", &vb, true))?;
        let lengths = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("sbattn cache lengths"),
            size: 4 * desc.batch as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        Ok(KvCache { device: device.clone(), desc, k, v, lengths, host_lengths: vec![0; desc.batch as usize] })
    }

    /// The description.
    pub fn desc(&self) -> &KvCacheDesc {
        &self.desc
    }

    /// The host mirror of each sequence's length (tokens held), as of the last recorded append.
    pub fn lengths(&self) -> &[u32] {
        &self.host_lengths
    }

    /// The GPU buffer of lengths, `[B]` `u32`.
    pub fn lengths_buffer(&self) -> &wgpu::Buffer {
        &self.lengths
    }

    /// The key cache, `capacity` tokens per sequence.
    pub fn k(&self) -> TensorRef<'_> {
        self.k.as_ref()
    }

    /// The value cache, `capacity` tokens per sequence.
    pub fn v(&self) -> TensorRef<'_> {
        self.v.as_ref()
    }

    /// Records setting every sequence's length (`0` empties it; tokens past a length are
    /// ignored, not cleared) and sets the host mirror.
    ///
    /// # Errors
    /// [`Error::HostData`] when `lengths` does not have one entry per sequence,
    /// [`Error::CacheOverflow`] for a length past the capacity.
    pub fn set_lengths(&mut self, encoder: &mut wgpu::CommandEncoder, lengths: &[u32]) -> Result<()> {
        let b = self.desc.batch as usize;
        if lengths.len() != b {
            return Err(Error::HostData { what: "lengths", expected: b, got: lengths.len() });
        }
        if let Some((s, &len)) = lengths.iter().enumerate().find(|(_, l)| **l > self.desc.capacity) {
            return Err(Error::CacheOverflow { sequence: s as u32, length: 0, appending: len, capacity: self.desc.capacity });
        }
        let src = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("sbattn set lengths"),
            contents: bytemuck::cast_slice(lengths),
            usage: wgpu::BufferUsages::COPY_SRC,
        });
        encoder.copy_buffer_to_buffer(&src, 0, &self.lengths, 0, 4 * b as u64);
        self.host_lengths.copy_from_slice(lengths);
        Ok(())
    }
}

/// Validates a `[batch, tokens, heads, D]` tensor of `dtype` and computes its binding.
#[allow(clippy::too_many_arguments)]
fn bind_tokens<'a>(
    name: &'static str,
    t: &TensorRef<'a>,
    [batch, tokens, heads]: [u32; 3],
    head_dim: u32,
    dtype: Dtype,
    output: bool,
    limits: &wgpu::Limits,
) -> Result<Binding<'a>> {
    let axes = [
        Axis { extent: batch as u64, stride: t.strides.batch },
        Axis { extent: tokens as u64, stride: t.strides.token },
        Axis { extent: heads as u64, stride: t.strides.head },
    ];
    tensor::bind(name, t.buffer, t.offset, &axes, head_dim as u64, dtype.size(), output, limits)
}

/// The binding of a cache tensor (written by appends, so it must not overlap itself).
fn bind_cache<'a>(name: &'static str, desc: &KvCacheDesc, t: &'a CacheTensor, limits: &wgpu::Limits) -> Result<Binding<'a>> {
    let extents = [desc.batch, desc.capacity, desc.kv_heads];
    bind_tokens(name, &t.as_ref(), extents, desc.head_dim, desc.dtype, true, limits)
}

/// New tokens' keys and values to append to a [`KvCache`].
#[derive(Clone, Copy, Debug)]
pub struct Append<'a> {
    /// Keys, `[B, tokens, Hkv, D]` in the cache's dtype (any strides, head dim contiguous).
    pub k: TensorRef<'a>,
    /// Values, same shape.
    pub v: TensorRef<'a>,
    /// Tokens per sequence in `k` and `v`.
    pub tokens: u32,
    /// Tokens to take per sequence (`<= tokens`, one entry per sequence): a ragged batch, such
    /// as prompts of different lengths. `None` takes all `tokens` for every sequence.
    pub counts: Option<&'a [u32]>,
}

impl<'a> Append<'a> {
    /// Appends all `tokens` of `k` and `v` to every sequence.
    pub fn new(k: TensorRef<'a>, v: TensorRef<'a>, tokens: u32) -> Self {
        Append { k, v, tokens, counts: None }
    }
}

/// One decode call: `new_tokens` queries per sequence against a [`KvCache`] that already holds
/// their keys and values (append first).
///
/// Build with [`Decode::new`] and adjust the public fields.
#[derive(Clone, Copy, Debug)]
pub struct Decode<'a> {
    /// The layer's cache.
    pub cache: &'a KvCache,
    /// Query heads `H` (a multiple of the cache's kv heads).
    pub heads: u32,
    /// Queries per sequence, `1..=MAX_NEW_TOKENS`: the last `new_tokens` tokens of each.
    pub new_tokens: u32,
    /// Queries, `[B, new_tokens, H, D]`, cache dtype.
    pub q: TensorRef<'a>,
    /// Output, same shape; must not share a buffer with `q`, the cache or the bias.
    pub o: TensorRef<'a>,
    /// Which keys a query sees ([`Mask::Strict`]: the tokens before it).
    pub mask: Mask,
    /// Logit scale; `None` is `1 / sqrt(head_dim)`.
    pub scale: Option<f32>,
    /// Remainder handling as in the forward pass: `Return` writes `[B, H, new_tokens]` f32,
    /// `AddToValue` adds `rem * v` of the query's own token, `AddBias` takes `[H, D]`.
    pub remainder: Remainder<'a>,
    /// Where to write `log rem` per query, `[B, H, new_tokens]` f32.
    pub log_rem: Option<BufferRef<'a>>,
    /// Lane reduction path ([`Path::Auto`] unless testing; [`Path::CooperativeMatrix`] has no
    /// decode kernel and picks as `Auto` does).
    pub path: Path,
    /// Early exit: within each key slot of each chunk, once every query's stick left (counted
    /// from the slot's right edge) is below this, the keys further left are skipped. Each
    /// skipped weight is below `eps`, so `o` moves by at most `eps * sum |v_j|` over them; `rem`
    /// and `log_rem` then only bound the true remainder from above. `0.0` (the default) walks
    /// every key.
    pub early_exit_eps: f32,
    /// Chunks per sequence; `None` lets [`choose_splits`] pick. For tests and tuning.
    pub splits: Option<u32>,
    /// Lanes per key (8, 16, 32 or 64); `None` lets [`choose_variant`] pick. For tuning.
    pub lanes_per_key: Option<u32>,
    /// Cache loads (no wider than the cache's head dim, offsets and strides allow); `None`
    /// lets [`choose_variant`] take the widest. For tuning.
    pub load: Option<Load>,
    /// Keys each key slot loads per step (1, 2, 4 or 8); `None` lets [`choose_variant`] pick.
    /// For tuning.
    pub keys_per_step: Option<u32>,
}

impl<'a> Decode<'a> {
    /// A call with the defaults: strict mask, `1/sqrt(D)` scale, remainder discarded, no
    /// `log_rem`, automatic path and split, no early exit.
    pub fn new(cache: &'a KvCache, heads: u32, new_tokens: u32, q: TensorRef<'a>, o: TensorRef<'a>) -> Self {
        Decode {
            cache,
            heads,
            new_tokens,
            q,
            o,
            mask: Mask::Strict,
            scale: None,
            remainder: Remainder::Discard,
            log_rem: None,
            path: Path::Auto,
            early_exit_eps: 0.0,
            splits: None,
            lanes_per_key: None,
            load: None,
            keys_per_step: None,
        }
    }
}

/// Uniform parameters of the partial kernel (`Params` in decode.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
struct DecodeParams {
    h: u32,
    group: u32,
    n: u32,
    d: u32,
    rows: u32,
    row_blocks: u32,
    splits: u32,
    flags: u32,
    q: [u32; 4],
    k: [u32; 4],
    v: [u32; 4],
    scale: f32,
    log_eps: f32,
    capacity: u32,
    _pad: u32,
}

/// Uniform parameters of the merge kernel (`Params` in decode_merge.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
struct MergeParams {
    h: u32,
    n: u32,
    d: u32,
    splits: u32,
    dp4: u32,
    group: u32,
    flags: u32,
    capacity: u32,
    o: [u32; 4],
    v: [u32; 4],
    rem_off: u32,
    lrem_off: u32,
    bias_off: u32,
    cw: u32,
}

/// Uniform parameters of the append kernels (`Params` in kv_append.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
struct AppendParams {
    n: u32,
    batch: u32,
    d: u32,
    capacity: u32,
    kn: [u32; 4],
    vn: [u32; 4],
    kc: [u32; 4],
    vc: [u32; 4],
}

/// Offset and strides of a binding, in units of `unit` elements.
fn addressing(b: &Binding<'_>, unit: u32) -> [u32; 4] {
    [b.offset / unit, b.strides[0] / unit, b.strides[1] / unit, b.strides[2] / unit]
}

/// One kernel's uniform struct: `(kernel, WGSL source, Rust size, [(WGSL member, Rust offset)])`.
pub type ParamLayout = (String, String, usize, Vec<(String, usize)>);

/// The WGSL `Params` struct of each kernel with the byte offset of every member in the Rust
/// struct written for it, and its size, for a test that compares them with naga's layout.
/// Arrays `[u32; 4]` in Rust cover four WGSL members.
pub fn param_layouts(target: Target) -> Vec<ParamLayout> {
    let quad = |name: &str, at: usize| -> Vec<(String, usize)> {
        ["off", "sb", "st", "sh"].iter().enumerate().map(|(i, s)| (format!("{name}_{s}"), at + 4 * i)).collect()
    };
    let plain = |names: &[&str], at: usize| -> Vec<(String, usize)> {
        names.iter().enumerate().map(|(i, s)| (s.to_string(), at + 4 * i)).collect()
    };
    use std::mem::{offset_of, size_of};
    let v = all_variants()[0];
    let decode = [
        plain(&["h", "group", "n", "d", "rows", "row_blocks", "splits", "flags"], 0),
        quad("q", offset_of!(DecodeParams, q)),
        quad("k", offset_of!(DecodeParams, k)),
        quad("v", offset_of!(DecodeParams, v)),
        plain(&["scale", "log_eps", "capacity", "_pad1"], offset_of!(DecodeParams, scale)),
    ]
    .concat();
    let merge = [
        plain(&["h", "n", "d", "splits", "dp4", "group", "flags", "capacity"], 0),
        quad("o", offset_of!(MergeParams, o)),
        quad("v", offset_of!(MergeParams, v)),
        plain(&["rem_off", "lrem_off", "bias_off", "cw"], offset_of!(MergeParams, rem_off)),
    ]
    .concat();
    let append = [
        plain(&["n", "batch", "d", "capacity"], 0),
        quad("kn", offset_of!(AppendParams, kn)),
        quad("vn", offset_of!(AppendParams, vn)),
        quad("kc", offset_of!(AppendParams, kc)),
        quad("vc", offset_of!(AppendParams, vc)),
    ]
    .concat();
    vec![
        ("decode".into(), shader::decode_source(&v, target), size_of::<DecodeParams>(), decode),
        ("decode merge".into(), shader::decode_merge_source(Dtype::F32, target), size_of::<MergeParams>(), merge),
        ("kv append".into(), shader::kv_append_source(Dtype::F32, target), size_of::<AppendParams>(), append),
    ]
}

/// Every decode kernel source [`choose_variant`] can need on some adapter, for offline
/// validation: each dtype, path and load width with every rows x cols pair the registers
/// allow, at each lane count. `keys_per_step` is 1 in each: it is the overridable constant `U`
/// of the pipeline, not part of the source, so each entry stands for all of 1, 2, 4 and 8.
pub fn all_variants() -> Vec<DecodeVariant> {
    let mut out = Vec::new();
    for dtype in [Dtype::F32, Dtype::F16] {
        for path in [Path::Subgroup, Path::SharedMemory] {
            for load in [Load::Scalar, Load::Vec4, Load::Vec8] {
                if load == Load::Vec8 && dtype != Dtype::F16 {
                    continue;
                }
                let w = load.vec4s();
                for lanes in LANES {
                    for rows in [1, 2, 4, 8, 16] {
                        for cols in (w..=MAX_COLS.min(MAX_ACCUMULATORS / rows)).step_by(w as usize) {
                            // Lane counts past what the head dim needs are never chosen.
                            if cols > w && 4 * lanes * (cols - w) >= MAX_HEAD_DIM {
                                continue;
                            }
                            out.push(DecodeVariant { dtype, path, load, lanes, cols, rows, keys_per_step: 1 });
                        }
                    }
                }
            }
        }
    }
    out
}

/// `(name, WGSL)` of every decode, merge and append kernel, for [`shader::all_sources`].
pub(crate) fn all_sources(target: Target) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> =
        all_variants().iter().map(|v| (format!("decode {v:?}"), shader::decode_source(v, target))).collect();
    for dtype in [Dtype::F32, Dtype::F16] {
        out.push((format!("decode merge {dtype:?}"), shader::decode_merge_source(dtype, target)));
        out.push((format!("kv append {dtype:?}"), shader::kv_append_source(dtype, target)));
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kernel {
    Decode(DecodeVariant),
    Merge(Dtype),
    Append(Dtype),
    Advance(Dtype),
}

/// A bind group layout with a uniform at binding 0 and storage buffers at 1.. (`true` =
/// read-only), and its pipeline layout.
struct KernelLayout {
    group: wgpu::BindGroupLayout,
    pipeline: wgpu::PipelineLayout,
}

impl KernelLayout {
    fn new(device: &wgpu::Device, label: &str, read_only: &[bool]) -> Self {
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        }];
        entries.extend(read_only.iter().enumerate().map(|(i, r)| storage_entry(i as u32 + 1, *r)));
        let group = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(label), entries: &entries });
        let pipeline = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(label),
            bind_group_layouts: &[Some(&group)],
            immediate_size: 0,
        });
        KernelLayout { group, pipeline }
    }
}

/// Scratch for the partial outputs, shared by every call of one [`Decoder`] (calls recorded
/// in order are ordered on the GPU too, so reuse is safe) and grown on demand.
struct Scratch {
    o: wgpu::Buffer,
    s: wgpu::Buffer,
}

/// Decode and KV-cache kernels on one device: the pipelines compiled so far, scratch for the
/// split-K partials, and the calls that record work into the caller's encoders.
pub struct Decoder {
    device: wgpu::Device,
    caps: Capabilities,
    decode_layout: KernelLayout,
    merge_layout: KernelLayout,
    append_layout: KernelLayout,
    /// Bound where a call has no rem / log_rem / bias buffer.
    dummies: [wgpu::Buffer; 3],
    pipelines: Pipelines<Kernel>,
    scratch: Mutex<Option<Scratch>>,
}

/// A validated decode call: plan, parameters and bindings.
struct Prepared<'a> {
    plan: DecodePlan,
    decode: DecodeParams,
    merge: MergeParams,
    /// q, k cache, v cache.
    inputs: [Binding<'a>; 3],
    /// o, rem, log_rem, bias.
    outputs: [Binding<'a>; 4],
    /// Bytes of the partial outputs and of the partial logs.
    scratch: (u64, u64),
}

impl Decoder {
    /// Uses the caller's device (enable `SHADER_F16` for f16 and `SUBGROUP` for the subgroup
    /// path; see [`crate::Attention::device_descriptor`]).
    pub fn new(device: &wgpu::Device) -> Self {
        let dummies = unused_bindings(device);
        Decoder {
            device: device.clone(),
            caps: Capabilities::of(device, None),
            // q, k, v, lengths read; o_part, s_part written.
            decode_layout: KernelLayout::new(device, "sbattn decode", &[true, true, true, true, false, false]),
            // o_part, s_part, lengths, v read; o, rem, log_rem written; bias read.
            merge_layout: KernelLayout::new(device, "sbattn decode merge", &[true, true, true, true, false, false, false, true]),
            // counts read; lengths written; k, v new read; k, v cache written.
            append_layout: KernelLayout::new(device, "sbattn kv append", &[true, false, true, true, false, false]),
            dummies,
            pipelines: Pipelines::new(device),
            scratch: Mutex::new(None),
        }
    }

    /// Compiles kernels from now on with every wgpu runtime check, loop bounding included
    /// (the default keeps index clamping but not loop bounding, as
    /// [`crate::Attention`] does; see [`ShaderChecks`]).
    pub fn with_full_runtime_checks(mut self) -> Self {
        // SAFETY: more checks than the default.
        unsafe { self.pipelines.set_checks(ShaderChecks::Full) };
        self
    }

    /// Compiles kernels from now on without wgpu's runtime checks (no index clamping, no
    /// loop bounding).
    ///
    /// # Safety
    /// Sound only because every call is validated on the host (shapes, strides, offsets and
    /// buffer sizes, so that no global index can leave its binding), the kernels clamp the
    /// lengths they read from the GPU to the cache's capacity, and every workgroup index is
    /// in range by construction; the default keeps wgpu's index clamping as a second line of
    /// defence. The tests run both.
    pub unsafe fn without_runtime_checks(mut self) -> Self {
        // SAFETY: the caller opted in, as this function's contract says.
        unsafe { self.pipelines.set_checks(ShaderChecks::Off) };
        self
    }

    /// The runtime checks kernels are compiled with.
    pub fn shader_checks(&self) -> ShaderChecks {
        self.pipelines.checks()
    }

    /// What the device offers.
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn pipeline(&self, kernel: Kernel) -> Result<Arc<wgpu::ComputePipeline>> {
        self.pipelines.get(kernel, || {
            let t = Target::current();
            // The partial kernel's keys per step is its overridable constant `U`.
            let (source, layout, entry, constants) = match kernel {
                Kernel::Decode(v) => {
                    (shader::decode_source(&v, t), &self.decode_layout, "main", vec![("U", v.keys_per_step as f64)])
                }
                Kernel::Merge(d) => (shader::decode_merge_source(d, t), &self.merge_layout, "main", vec![]),
                Kernel::Append(d) => (shader::kv_append_source(d, t), &self.append_layout, "append", vec![]),
                Kernel::Advance(d) => (shader::kv_append_source(d, t), &self.append_layout, "advance", vec![]),
            };
            PipelineSpec {
                label: "sbattn decode",
                source,
                layout: &layout.pipeline,
                entry,
                constants,
                // Every kernel writes its workgroup memory before reading it (decode.wgsl: the
                // query tile, then the slot merge's first round stores; decode_merge.wgsl: each
                // scan and sum; decode_shared.wgsl: each lane sum), so the zero fill that
                // would start every workgroup is skipped.
                zero_workgroup_memory: false,
            }
        })
    }

    /// Validates `call` and records its two dispatches (copy, then length update) into
    /// `encoder`; advances the cache's host mirror of the lengths.
    ///
    /// Nothing is recorded (and the mirror is unchanged) when an error is returned.
    ///
    /// # Errors
    /// [`Error::CacheOverflow`] when a sequence would pass the capacity; [`Error::HostData`]
    /// for `counts` of the wrong length; [`Error::Shape`] for zero tokens or a count above
    /// `tokens`; tensor errors (usage, size, strides, sharing memory with the cache) as in
    /// [`crate::Attention::forward`].
    pub fn append<'a>(&self, encoder: &mut wgpu::CommandEncoder, cache: &mut KvCache, call: &Append<'a>) -> Result<()> {
        let desc = cache.desc;
        let n = call.tokens;
        if n == 0 {
            return Err(Error::Shape("append of 0 tokens".into()));
        }
        let counts: Vec<u32> = match call.counts {
            Some(c) if c.len() != desc.batch as usize => {
                return Err(Error::HostData { what: "counts", expected: desc.batch as usize, got: c.len() })
            }
            Some(c) => c.to_vec(),
            None => vec![n; desc.batch as usize],
        };
        for (s, (&c, &len)) in counts.iter().zip(&cache.host_lengths).enumerate() {
            if c > n {
                return Err(Error::Shape(format!("counts[{s}] = {c} is more than the {n} tokens given")));
            }
            if len as u64 + c as u64 > desc.capacity as u64 {
                return Err(Error::CacheOverflow { sequence: s as u32, length: len, appending: c, capacity: desc.capacity });
            }
        }
        let l = &self.caps.limits;
        let new = |name, t: &TensorRef<'a>| bind_tokens(name, t, [desc.batch, n, desc.kv_heads], desc.head_dim, desc.dtype, false, l);
        let (kn, vn) = (new("k", &call.k)?, new("v", &call.v)?);
        let (kc, vc) = (bind_cache("k cache", &desc, &cache.k, l)?, bind_cache("v cache", &desc, &cache.v, l)?);
        for (a, b) in [(("k", &kn), ("k cache", &kc)), (("k", &kn), ("v cache", &vc)), (("v", &vn), ("k cache", &kc)), (("v", &vn), ("v cache", &vc))] {
            tensor::check_disjoint((a.0, a.1, false), (b.0, b.1, true))?;
        }
        let grid_x = n.min(l.max_compute_workgroups_per_dimension);
        if desc.kv_heads > l.max_compute_workgroups_per_dimension || desc.batch > l.max_compute_workgroups_per_dimension {
            return Err(Error::Limit {
                what: "kv heads or batch (append dispatch)",
                value: desc.kv_heads.max(desc.batch) as u64,
                limit: l.max_compute_workgroups_per_dimension as u64,
            });
        }
        let append = self.pipeline(Kernel::Append(desc.dtype))?;
        let advance = self.pipeline(Kernel::Advance(desc.dtype))?;
        let params = AppendParams {
            n,
            batch: desc.batch,
            d: desc.head_dim,
            capacity: desc.capacity,
            kn: addressing(&kn, 1),
            vn: addressing(&vn, 1),
            kc: addressing(&kc, 1),
            vc: addressing(&vc, 1),
        };
        let uniform = self.uniform("sbattn kv append params", bytemuck::bytes_of(&params));
        let counts_buf = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("sbattn kv append counts"),
            contents: bytemuck::cast_slice(&counts),
            usage: wgpu::BufferUsages::STORAGE,
        });
        let mut entries = vec![
            wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() },
            wgpu::BindGroupEntry { binding: 1, resource: counts_buf.as_entire_binding() },
            wgpu::BindGroupEntry { binding: 2, resource: cache.lengths.as_entire_binding() },
        ];
        entries.extend([kn, vn, kc, vc].iter().enumerate().map(|(i, b)| b.entry(i as u32 + 3)));
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("sbattn kv append"),
            layout: &self.append_layout.group,
            entries: &entries,
        });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("sbattn kv append"), timestamp_writes: None });
            pass.set_bind_group(0, &bind_group, &[]);
            pass.set_pipeline(&append);
            pass.dispatch_workgroups(grid_x, desc.kv_heads, desc.batch);
            pass.set_pipeline(&advance);
            pass.dispatch_workgroups(desc.batch.div_ceil(SMALL_WG), 1, 1);
        }
        for (len, c) in cache.host_lengths.iter_mut().zip(&counts) {
            *len += c;
        }
        Ok(())
    }

    /// How `call` would run (kernel, splits, grid), after every check [`Decoder::decode`]
    /// makes.
    ///
    /// # Errors
    /// As [`Decoder::decode`].
    pub fn plan(&self, call: &Decode<'_>) -> Result<DecodePlan> {
        Ok(self.prepare(call)?.plan)
    }

    /// Validates `call` and records its two dispatches (partial outputs per chunk, then the
    /// merge) into `encoder`.
    ///
    /// Nothing is recorded when an error is returned. Each call gets its own parameter
    /// buffers, so calls for many layers may share one encoder and one submit.
    ///
    /// # Errors
    /// [`Error::Shape`] for `new_tokens` outside `1..=MAX_NEW_TOKENS` or a sequence holding
    /// fewer tokens than that; [`Error::HeadsNotDivisible`]; [`Error::NonFiniteScale`];
    /// [`Error::InvalidParameter`] for an early-exit threshold outside `[0, 1)` or bad forced
    /// splits or lanes; tensor errors (usage, size, strides, aliasing) as in
    /// [`crate::Attention::forward`]; [`Error::Unsupported`] and [`Error::Limit`] for what the
    /// device cannot do.
    pub fn decode(&self, encoder: &mut wgpu::CommandEncoder, call: &Decode<'_>) -> Result<()> {
        let prep = self.prepare(call)?;
        let dtype = call.cache.desc.dtype;
        let partial = self.pipeline(Kernel::Decode(prep.plan.variant))?;
        let merge = self.pipeline(Kernel::Merge(dtype))?;
        let scratch = self.scratch(prep.scratch.0, prep.scratch.1)?;
        let du = self.uniform("sbattn decode params", bytemuck::bytes_of(&prep.decode));
        let mu = self.uniform("sbattn decode merge params", bytemuck::bytes_of(&prep.merge));
        let [q, k, v] = prep.inputs;
        let [o, rem, log_rem, bias] = prep.outputs;
        let lengths = call.cache.lengths.as_entire_binding();
        let (o_part, s_part) = (scratch.o.as_entire_binding(), scratch.s.as_entire_binding());
        let group = |label, layout: &KernelLayout, entries: &[wgpu::BindGroupEntry<'_>]| {
            self.device.create_bind_group(&wgpu::BindGroupDescriptor { label: Some(label), layout: &layout.group, entries })
        };
        let entry = |binding, resource| wgpu::BindGroupEntry { binding, resource };
        let decode_group = group(
            "sbattn decode",
            &self.decode_layout,
            &[
                entry(0, du.as_entire_binding()),
                q.entry(1),
                k.entry(2),
                v.entry(3),
                entry(4, lengths.clone()),
                entry(5, o_part.clone()),
                entry(6, s_part.clone()),
            ],
        );
        let merge_group = group(
            "sbattn decode merge",
            &self.merge_layout,
            &[
                entry(0, mu.as_entire_binding()),
                entry(1, o_part),
                entry(2, s_part),
                entry(3, lengths),
                v.entry(4),
                o.entry(5),
                rem.entry(6),
                log_rem.entry(7),
                bias.entry(8),
            ],
        );
        let s = &prep.decode;
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("sbattn decode"), timestamp_writes: None });
        pass.set_pipeline(&partial);
        pass.set_bind_group(0, &decode_group, &[]);
        let [x, y, z] = prep.plan.workgroups;
        pass.dispatch_workgroups(x, y, z);
        pass.set_pipeline(&merge);
        pass.set_bind_group(0, &merge_group, &[]);
        pass.dispatch_workgroups(s.h * s.n, z, 1);
        Ok(())
    }

    fn uniform(&self, label: &str, contents: &[u8]) -> wgpu::Buffer {
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents,
            usage: wgpu::BufferUsages::UNIFORM,
        })
    }

    /// The scratch buffers, grown to at least the given sizes.
    fn scratch(&self, o_bytes: u64, s_bytes: u64) -> Result<Scratch> {
        let mut guard = self.scratch.lock().map_err(|_| Error::Device("decode scratch poisoned".into()))?;
        let (old_o, old_s) = guard.as_ref().map_or((0, 0), |s| (s.o.size(), s.s.size()));
        if old_o < o_bytes || old_s < s_bytes {
            let make = |label, size: u64| {
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size: size.next_multiple_of(256),
                    usage: wgpu::BufferUsages::STORAGE,
                    mapped_at_creation: false,
                })
            };
            *guard = Some(Scratch {
                o: make("sbattn decode partial o", o_bytes.max(old_o)),
                s: make("sbattn decode partial log", s_bytes.max(old_s)),
            });
        }
        let s = guard.as_ref().ok_or_else(|| Error::Device("decode scratch missing".into()))?;
        Ok(Scratch { o: s.o.clone(), s: s.s.clone() })
    }

    /// All validation of a decode call.
    fn prepare<'a>(&'a self, call: &Decode<'a>) -> Result<Prepared<'a>> {
        let cache = call.cache;
        let desc = cache.desc;
        let n = call.new_tokens;
        if n == 0 || n > MAX_NEW_TOKENS {
            return Err(Error::Shape(format!("new_tokens {n} is outside 1..={MAX_NEW_TOKENS}")));
        }
        let s = Shape { batch: desc.batch, seq_len: n, heads: call.heads, kv_heads: desc.kv_heads, head_dim: desc.head_dim };
        s.validate()?;
        let scale = s.resolve_scale(call.scale)?;
        let eps = call.early_exit_eps;
        if !(0.0..1.0).contains(&eps) {
            return Err(Error::InvalidParameter { name: "early_exit_eps", reason: format!("{eps} is not in [0, 1)") });
        }
        let lim = self.caps.limits.max_compute_workgroups_per_dimension;
        let most = MAX_SPLITS.min(lim);
        if let Some(sp) = call.splits.filter(|sp| !(1..=most).contains(sp)) {
            return Err(Error::InvalidParameter { name: "splits", reason: format!("{sp} is not in 1..={most}") });
        }
        if let Some((b, &len)) = cache.host_lengths.iter().enumerate().find(|(_, l)| **l < n) {
            return Err(Error::Shape(format!(
                "sequence {b} holds {len} tokens, fewer than the {n} queries: append their keys and values first"
            )));
        }
        let l = &self.caps.limits;
        let (es, d) = (desc.dtype.size(), desc.head_dim as u64);
        let rows_q = |name, t: &TensorRef<'a>| bind_tokens(name, t, [s.batch, n, s.heads], s.head_dim, desc.dtype, name == "o", l);
        let q = rows_q("q", &call.q)?;
        let o = rows_q("o", &call.o)?;
        let k = bind_cache("k cache", &desc, &cache.k, l)?;
        let v = bind_cache("v cache", &desc, &cache.v, l)?;
        let rows = s.batch as u64 * s.heads as u64 * n as u64;
        let (mode, rem, log_rem, bias) =
            remainder_bindings(&call.remainder, call.log_rem.as_ref(), &self.dummies, rows, s.heads as u64 * d, es, l)?;
        // Outputs must not meet each other or any input (the cache included: the merge reads
        // the value cache, and writing into either cache would corrupt it).
        // (name, binding, used)
        let outputs = [("o", &o, true), ("rem", &rem, mode == 1), ("log_rem", &log_rem, call.log_rem.is_some())];
        let inputs = [("q", &q, true), ("k cache", &k, true), ("v cache", &v, true), ("bias", &bias, mode == 3)];
        for (i, &(name, out, used)) in outputs.iter().enumerate() {
            if !used {
                continue;
            }
            for &(other, b, _) in outputs[i + 1..].iter().filter(|b| b.2) {
                tensor::check_disjoint((name, out, true), (other, b, true))?;
            }
            for &(input, b, _) in inputs.iter().filter(|b| b.2) {
                tensor::check_disjoint((name, out, true), (input, b, false))?;
            }
        }
        // Loads may be as wide as the largest power of two (up to 8) dividing the head dim and
        // every element offset and stride of both caches.
        let bits = [k.offset, v.offset, desc.head_dim].into_iter().chain(k.strides).chain(v.strides).fold(0, |a, x| a | x);
        let widest = Load::widest(desc.dtype, 1 << bits.trailing_zeros().min(3));
        let group = s.heads / s.kv_heads;
        let rows_needed = group.saturating_mul(n);
        let forced = Forced { lanes: call.lanes_per_key, load: call.load, keys_per_step: call.keys_per_step };
        let variant = choose_variant(&self.caps, desc.dtype, desc.head_dim, rows_needed, widest, call.path, forced)?;
        let row_blocks = rows_needed.div_ceil(variant.rows);
        let ac = (call.mask == Mask::IncludeCurrent) as u32;
        let max_keys = cache.host_lengths.iter().map(|len| len - 1 + ac).max().unwrap_or(0);
        let base = s.batch.saturating_mul(s.kv_heads).saturating_mul(row_blocks);
        let splits = call.splits.unwrap_or_else(|| choose_splits(&self.caps, base, max_keys, &variant));
        let y = s.kv_heads as u64 * row_blocks as u64;
        for (what, value) in [("kv heads x row blocks (dispatch y)", y), ("batch (dispatch z)", s.batch as u64), ("heads x new tokens (merge dispatch x)", s.heads as u64 * n as u64)] {
            if value > lim as u64 {
                return Err(Error::Limit { what, value, limit: lim as u64 });
            }
        }
        let dp4 = variant.row_vec4s();
        let o_vec4s = rows * splits as u64 * dp4 as u64;
        let scratch = (16 * o_vec4s, 4 * rows * splits as u64);
        let max_bind = l.max_storage_buffer_binding_size.min(l.max_buffer_size);
        if scratch.0 > max_bind || o_vec4s > u32::MAX as u64 {
            return Err(Error::Limit { what: "decode partial outputs (bytes)", value: scratch.0, limit: max_bind });
        }
        let unit = variant.load.elements();
        let flags = if ac == 1 { FLAG_ATTEND_CURRENT } else { 0 }
            | (mode << REM_SHIFT)
            | if call.log_rem.is_some() { FLAG_WRITE_LOG_REM } else { 0 }
            | if eps > 0.0 { FLAG_EARLY_EXIT } else { 0 };
        let decode = DecodeParams {
            h: s.heads,
            group,
            n,
            d: s.head_dim,
            rows: rows_needed,
            row_blocks,
            splits,
            flags,
            q: addressing(&q, 1),
            k: addressing(&k, unit),
            v: addressing(&v, unit),
            scale,
            log_eps: if eps > 0.0 { eps.ln() } else { 0.0 },
            capacity: desc.capacity,
            _pad: 0,
        };
        let merge = MergeParams {
            h: s.heads,
            n,
            d: s.head_dim,
            splits,
            dp4,
            group,
            flags,
            capacity: desc.capacity,
            o: addressing(&o, 1),
            v: addressing(&v, 1),
            rem_off: rem.offset,
            lrem_off: log_rem.offset,
            bias_off: bias.offset,
            cw: s.head_dim.div_ceil(4).next_power_of_two().min(MERGE_WG),
        };
        let plan = DecodePlan { variant, splits, row_blocks, workgroups: [splits, y as u32, s.batch] };
        Ok(Prepared { plan, decode, merge, inputs: [q, k, v], outputs: [o, rem, log_rem, bias], scratch })
    }
}
