//! The decode kernels' variants and grid: the partial (split-K) kernel chosen from the device,
//! the cache's alignment and the rows per kv head; the split count from the grid and the cache
//! length. Pure functions, a reason per choice.

use crate::caps::Capabilities;
use crate::kernel::consts::{DECODE_MERGE_VEC4, WORKGROUP};
use crate::kernel::source::{files, Extensions, Part, Recipe};
use crate::ops::common::check_dtype;
use crate::tensor::Access;
use crate::{Dtype, Error, KernelPath, Result, MAX_HEAD_DIM};

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
/// Most chunks per sequence a caller may force.
pub(crate) const MAX_SPLITS: u32 = 4096;
/// Most chunks the automatic choice makes. Measured on an H200 (BENCHMARKS.md, 2026-11-29):
/// at B = 1 (8 kv heads), 32 chunks beat 128 by 8-20% at caches of 32768 and 131072 keys, and
/// the longer chunks never lost at B = 8 or 32; the merge also reads `splits` rows per query.
const AUTO_MAX_SPLITS: u32 = 32;
/// Fewest steps (of `keys_per_step` keys) each key slot of a workgroup should walk, so that
/// the workgroup's fixed costs (query tile, slot merge with its barriers, partial rows) stay
/// small next to the loads.
const MIN_STEPS_PER_SLOT: u32 = 4;

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
    /// Lane reduction path ([`KernelPath::Subgroup`] or [`KernelPath::SharedMemory`], never `Auto`).
    pub path: KernelPath,
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
        WORKGROUP / self.lanes
    }

    /// vec4s of one padded head-dim row (`DP4`): the row length of the partial outputs.
    pub fn row_vec4s(&self) -> u32 {
        self.cols * self.lanes
    }

    /// Workgroup memory the kernel declares, in bytes (mirrors the constants of decode.wgsl).
    pub fn workgroup_bytes(&self) -> u32 {
        let rmp = self.rows * self.row_vec4s();
        let nb = (DECODE_MERGE_VEC4 / rmp).clamp(1, self.key_slots());
        let quads = self.rows.div_ceil(4);
        let shared = if self.path == KernelPath::SharedMemory { WORKGROUP } else { 0 };
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

/// How a [`crate::Decode`] call runs: the kernel, the split count and the grid.
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
/// [`choose_variant`] and [`choose_splits`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct DecodeTuning {
    /// Chunks per sequence, `1..=4096`.
    pub splits: Option<u32>,
    /// Lanes per key: 8, 16, 32 or 64.
    pub lanes: Option<u32>,
    /// Cache loads, no wider than the cache allows.
    pub load: Option<Load>,
    /// Keys per step: 1, 2, 4 or 8.
    pub keys_per_step: Option<u32>,
}

impl DecodeTuning {
    /// Forces the chunks per sequence.
    pub fn with_splits(self, splits: u32) -> Self {
        DecodeTuning { splits: Some(splits), ..self }
    }

    /// Forces the lanes per key.
    pub fn with_lanes(self, lanes: u32) -> Self {
        DecodeTuning { lanes: Some(lanes), ..self }
    }

    /// Forces the cache loads.
    pub fn with_load(self, load: Load) -> Self {
        DecodeTuning { load: Some(load), ..self }
    }

    /// Forces the keys per step.
    pub fn with_keys_per_step(self, keys: u32) -> Self {
        DecodeTuning { keys_per_step: Some(keys), ..self }
    }
}

/// Chooses the decode kernel for `rows_needed` query rows per kv head (group size times new
/// tokens) on a cache that allows loads up to `widest`, on the requested path.
///
/// [`KernelPath::Auto`] takes the subgroup path where the adapter allows it and it holds at
/// least as many rows as the shared-memory path. `forced` overrides the choices below one by
/// one.
///
/// # Errors
/// [`Error::Unsupported`] for f16 without `SHADER_F16`, a subgroup path the adapter cannot
/// run or the tensor-core path (decode is bandwidth-bound and has no such kernel),
/// [`Error::InvalidParameter`] for a bad forced lane count, load or keys per step,
/// [`Error::Limit`] when no variant fits the device's workgroup memory.
pub fn choose_variant(
    caps: &Capabilities,
    dtype: Dtype,
    head_dim: u32,
    rows_needed: u32,
    widest: Load,
    requested: KernelPath,
    forced: &DecodeTuning,
) -> Result<DecodeVariant> {
    check_dtype(caps, dtype)?;
    if requested == KernelPath::CooperativeMatrix {
        return Err(Error::Unsupported("decode has no tensor-core kernel (it is bound by reading the cache)".into()));
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
    let (min_sg, max_sg) = (caps.subgroup_min_size, caps.subgroup_max_size);
    // Subgroup path: the lanes of a key must sit in one subgroup whatever size it runs at.
    let subgroup_lanes = (caps.features.contains(wgpu::Features::SUBGROUP)
        && min_sg.is_power_of_two()
        && max_sg <= WORKGROUP)
        .then_some(min_sg);
    let l = &caps.limits;
    let best = |path: KernelPath| -> Option<DecodeVariant> {
        let max_lanes = if path == KernelPath::Subgroup { subgroup_lanes? } else { u32::MAX };
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
                    let fit = if caps.is_cpu() { 1 } else { fit };
                    return Some(DecodeVariant { keys_per_step: forced.keys_per_step.unwrap_or(fit), ..v });
                }
            }
            rows /= 2;
        }
        None
    };
    let chosen = match requested {
        KernelPath::Subgroup if subgroup_lanes.is_none() => {
            return Err(Error::Unsupported(format!(
                "the subgroup path needs Features::SUBGROUP and power-of-two subgroups of at most {WORKGROUP} \
                 invocations (adapter: {}, sizes {min_sg}..={max_sg})",
                caps.features.contains(wgpu::Features::SUBGROUP)
            )))
        }
        KernelPath::Subgroup => best(KernelPath::Subgroup),
        KernelPath::SharedMemory => best(KernelPath::SharedMemory),
        _ => match (best(KernelPath::Subgroup), best(KernelPath::SharedMemory)) {
            (Some(s), Some(m)) if m.rows > s.rows => Some(m),
            (Some(s), _) => Some(s),
            (None, m) => m,
        },
    };
    chosen.ok_or_else(|| match forced.lanes {
        Some(p) if requested == KernelPath::Subgroup && p > min_sg => {
            Error::Unsupported(format!("{p} lanes per key do not fit the adapter's minimum subgroup size {min_sg}"))
        }
        _ => {
            // Nothing fits the workgroup memory: report the smallest candidate.
            let p = forced.lanes.unwrap_or(LANES[0]);
            let path = if requested == KernelPath::SharedMemory { requested } else { KernelPath::Subgroup };
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
    let target = if caps.is_cpu() { 2 * cpu_threads() } else { 1024 };
    let want = target.div_ceil(base_workgroups.max(1));
    let per_workgroup = variant.key_slots() * variant.keys_per_step * MIN_STEPS_PER_SLOT;
    let most = max_keys.div_ceil(per_workgroup).max(1);
    want.min(most).clamp(1, AUTO_MAX_SPLITS)
}


/// Threads of the host, a proxy for a CPU adapter's cores.
fn cpu_threads() -> u32 {
    #[cfg(not(target_arch = "wasm32"))]
    {
        std::thread::available_parallelism().map_or(4, |n| n.get() as u32)
    }
    #[cfg(target_arch = "wasm32")]
    {
        4
    }
}

/// Storage bindings of the partial kernel: q, k cache, v cache, lengths read; partial o and
/// partial logs written.
const PARTIAL_BINDINGS: &[Access] = &[Access::Read, Access::Read, Access::Read, Access::Read, Access::Write, Access::Write];
/// Storage bindings of the merge kernel: partial o, partial logs, lengths, v cache read; o, rem,
/// log_rem written; bias read.
const MERGE_BINDINGS: &[Access] = &[
    Access::Read,
    Access::Read,
    Access::Read,
    Access::Read,
    Access::Write,
    Access::Write,
    Access::Write,
    Access::Read,
    Access::Write,
    Access::Write,
];

impl DecodeVariant {
    /// The partial kernel's recipe.
    pub(crate) fn recipe(&self) -> Recipe {
        let load = match self.load {
            Load::Vec8 => files::DECODE_LOAD_VEC8,
            Load::Vec4 => files::DECODE_LOAD_VEC4,
            Load::Scalar => files::DECODE_LOAD_SCALAR,
        };
        let subgroup = self.path == KernelPath::Subgroup;
        let reduce = if subgroup { files::DECODE_REDUCE_SUBGROUP } else { files::DECODE_REDUCE_SHARED };
        Recipe {
            name: if subgroup { "decode/partial subgroup" } else { "decode/partial shared" },
            dtype: self.dtype,
            parts: [files::ADDR, files::PAGES, files::DECODE_PARTIAL, files::STICK, load, reduce].map(Part).to_vec(),
            consts: vec![
                ("WG", WORKGROUP),
                ("MERGE_VEC4", DECODE_MERGE_VEC4),
                ("P", self.lanes),
                ("M", self.cols),
                ("R", self.rows),
                ("W", self.load.vec4s()),
            ],
            // Keys per step is the overridable constant `U`: one module serves 1, 2, 4 and 8.
            // Contiguous unless the call is paged (`Recipe::with_paging`).
            overrides: vec![("U", self.keys_per_step), ("PAGED", 0)],
            entry: "main",
            bindings: PARTIAL_BINDINGS,
            extensions: Extensions { subgroups: subgroup, ..Default::default() },
            // The kernel writes its workgroup memory before reading it (the query tile, then
            // the slot merge's first round stores; reduce_shared.wgsl: each lane sum).
            zero_workgroup_memory: false,
            trusted: true,
        }
    }
}

/// The merge kernel's recipe for `dtype`.
pub(crate) fn merge_recipe(dtype: Dtype) -> Recipe {
    Recipe {
        name: "decode/merge",
        dtype,
        parts: [files::ADDR, files::PAGES, files::DECODE_MERGE].map(Part).to_vec(),
        consts: vec![("MW", WORKGROUP)],
        overrides: vec![("PAGED", 0)],
        entry: "main",
        bindings: MERGE_BINDINGS,
        extensions: Extensions::default(),
        // Each scan and sum writes its workgroup memory before reading it.
        zero_workgroup_memory: false,
        trusted: true,
    }
}

/// Every partial-kernel variant [`choose_variant`] can need on some adapter, for offline
/// validation: each dtype, path and load width with every rows x cols pair the registers
/// allow, at each lane count. `keys_per_step` is 1 in each: it is the overridable constant `U`
/// of the pipeline, not part of the source, so each entry stands for all of 1, 2, 4 and 8.
pub(crate) fn all_variants() -> Vec<DecodeVariant> {
    let mut out = Vec::new();
    for dtype in [Dtype::F32, Dtype::F16] {
        for path in [KernelPath::Subgroup, KernelPath::SharedMemory] {
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
