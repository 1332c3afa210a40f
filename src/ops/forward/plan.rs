//! The forward kernel's variants and tiles: one pure function of the device's capabilities and
//! the call, a reason per branch.

use crate::caps::{Capabilities, COOP_SUBGROUP, MIN_SUBGROUP};
use crate::kernel::source::{files, Extensions, Part, Recipe};
use crate::ops::common::{check_dtype, check_workgroup};
use crate::tensor::Access;
use crate::{Dtype, Error, KernelPath, Result, MAX_HEAD_DIM};

/// Largest head dim of the cooperative-matrix kernel (8 accumulator blocks of 16 per subgroup).
pub const COOP_MAX_HEAD_DIM: u32 = 128;
/// Keys per tile of the cooperative-matrix kernel unless tuned: 64 above head dim 64, 32 up to
/// it (measured on the H200, 2026-12-02, BENCHMARKS.md, prefetch on: 4.12 ms with 64 and 4.59
/// with 32 at B4 H12 T4096 D128 (call 1); 1.80 with 64 and 1.14 with 32 at B1 H32 T4096 D64
/// (call 2; call 1 gave 1.64 for 32, one of the one-process outliers BENCHMARKS.md describes)).
fn coop_block_n(head_dim: u32) -> u32 {
    if head_dim <= 64 { 32 } else { 64 }
}

/// The cooperative-matrix kernel's register prefetch unless tuned: off. Measured on the H200
/// (2026-12-02, BENCHMARKS.md, two device calls): at B4 H12 T4096 D128 with 64-key tiles 4.12
/// ms with it and 4.00 without (call 1), 4.06 and 3.94 (call 2); at B1 H32 T4096 D64 with
/// 32-key tiles 1.14 with it and 1.07 without (call 2). (With 64-key tiles at D64 it helped:
/// 1.80 against 2.06, call 1; those tiles are not the default there.)
const COOP_PREFETCH: bool = false;

/// The cooperative-matrix kernel's scan unless tuned: the product form (forward/coop.wgsl, two
/// transcendentals and a quarter per key instead of three). Measured on the H200 (2026-12-02,
/// call 3, BENCHMARKS.md), both in one process: 0.342 / 3.80 / 13.5 / 19.2 / 1.060 ms against
/// 0.351 / 3.92 / 14.0 / 20.0 / 1.065 in log space at B4 H12 T1024 / T4096 / T8192 D128, B8 H32
/// T4096 D128, B1 H32 T4096 D64; the reference checks' largest errors were the same.
const COOP_SCAN_PRODUCT: bool = true;

/// Tile sizes of a forward kernel. Everything else is derived from these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TileConfig {
    /// Query rows per workgroup.
    pub block_m: u32,
    /// Keys per tile.
    pub block_n: u32,
    /// Head-dim columns per chunk (a chunk staged at once, or one matrix block).
    pub head_block: u32,
    /// Head-dim chunks: the padded head dim is `head_chunks * head_block`.
    pub head_chunks: u32,
    /// Invocations per workgroup.
    pub workgroup_size: u32,
}

impl TileConfig {
    /// Invocations sharing one query row in the portable kernels: 8 (the smallest subgroup),
    /// each with `block_n / 8` of its keys (and 4 rows: forward/portable.wgsl).
    pub fn lanes_per_row(&self) -> u32 {
        MIN_SUBGROUP
    }
}

/// Tuning of the forward kernels, for measurements; the defaults (`None`) are what ships.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ForwardTuning {
    /// Keys per tile of the cooperative-matrix kernel: 32 or 64.
    pub coop_block_n: Option<u32>,
    /// The cooperative-matrix kernel loads the next K or V tile into registers during the
    /// current tile's math (`true`), or right before storing it into workgroup memory.
    pub coop_prefetch: Option<bool>,
    /// The cooperative-matrix kernel keeps its Q blocks in workgroup memory (`true`, loaded
    /// once per tile: fewer registers, more workgroup memory) or in registers.
    pub coop_q_shared: Option<bool>,
    /// Every forward kernel: work items ordered heaviest first over all query heads (`true`),
    /// or within each head (the heads one after another).
    pub heads_inner: Option<bool>,
    /// The cooperative-matrix kernel's scan in product form (`true`: an exponential and a
    /// reciprocal per key, a logarithm per four) or in log space (three per key).
    pub coop_scan_product: Option<bool>,
}

impl ForwardTuning {
    /// The same tuning with `block_n` keys per cooperative-matrix tile.
    pub fn with_coop_block_n(self, block_n: u32) -> Self {
        ForwardTuning { coop_block_n: Some(block_n), ..self }
    }

    /// The same tuning with the cooperative-matrix kernel's register prefetch on or off.
    pub fn with_coop_prefetch(self, on: bool) -> Self {
        ForwardTuning { coop_prefetch: Some(on), ..self }
    }

    /// The same tuning with the cooperative-matrix kernel's Q in workgroup memory or not.
    pub fn with_coop_q_shared(self, on: bool) -> Self {
        ForwardTuning { coop_q_shared: Some(on), ..self }
    }

    /// The same tuning with the work items ordered over all heads or within each head.
    pub fn with_heads_inner(self, on: bool) -> Self {
        ForwardTuning { heads_inner: Some(on), ..self }
    }

    /// The same tuning with the cooperative-matrix kernel's scan in product form or not.
    pub fn with_coop_scan_product(self, on: bool) -> Self {
        ForwardTuning { coop_scan_product: Some(on), ..self }
    }

    /// The same tuning with the work order `on` (`None`: the default).
    pub fn with_heads_inner_opt(self, on: Option<bool>) -> Self {
        ForwardTuning { heads_inner: on, ..self }
    }

    /// A short label of what is set, e.g. `bn32 qs`, empty for the defaults.
    pub fn label(&self) -> String {
        let mut parts = Vec::new();
        if let Some(n) = self.coop_block_n {
            parts.push(format!("bn{n}"));
        }
        let flag = |name: &str, v: Option<bool>| v.map(|on| if on { name.to_string() } else { format!("no{name}") });
        parts.extend(flag("pf", self.coop_prefetch));
        parts.extend(flag("qs", self.coop_q_shared));
        parts.extend(flag("hi", self.heads_inner));
        parts.extend(flag("sp", self.coop_scan_product));
        parts.join(" ")
    }

    /// Parses [`ForwardTuning::label`]'s form (`+` or spaces between the parts; `auto` or
    /// empty: the defaults).
    ///
    /// # Errors
    /// An unknown part.
    pub fn parse(s: &str) -> Result<Self> {
        let mut t = ForwardTuning::default();
        for part in s.split(['+', ' ']).filter(|p| !p.is_empty() && *p != "auto") {
            t = match part {
                "bn32" => t.with_coop_block_n(32),
                "bn64" => t.with_coop_block_n(64),
                "pf" | "nopf" => t.with_coop_prefetch(part == "pf"),
                "qs" | "noqs" => t.with_coop_q_shared(part == "qs"),
                "hi" | "nohi" => t.with_heads_inner(part == "hi"),
                "sp" | "nosp" => t.with_coop_scan_product(part == "sp"),
                _ => {
                    return Err(Error::InvalidParameter {
                        name: "tuning",
                        reason: format!("unknown part {part:?} (bn32, bn64, pf, nopf, qs, noqs, hi, nohi, sp, nosp)"),
                    })
                }
            };
        }
        Ok(t)
    }
}

/// Choices of a forward kernel besides its tiles (see [`ForwardTuning`] for each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KernelOptions {
    /// Cooperative-matrix kernel: the next tile's loads in registers during the current tile.
    pub prefetch: bool,
    /// Cooperative-matrix kernel: Q blocks in workgroup memory, not registers.
    pub q_shared: bool,
    /// Work items heaviest first over all heads, not head by head.
    pub heads_inner: bool,
    /// Cooperative-matrix kernel: the scan in product form.
    pub scan_product: bool,
}

impl Default for KernelOptions {
    fn default() -> Self {
        KernelOptions { prefetch: true, q_shared: false, heads_inner: false, scan_product: false }
    }
}

/// One compiled forward kernel: its storage type, path and tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ForwardVariant {
    /// Storage type.
    pub dtype: Dtype,
    /// Kernel path (never [`KernelPath::Auto`]).
    pub path: KernelPath,
    /// Tile sizes.
    pub tiles: TileConfig,
    /// Choices besides the tiles.
    pub options: KernelOptions,
}

/// The storage bindings of both forward kernels (forward/io.wgsl): q, k, v read; o, rem,
/// log_rem written; bias, schedule read.
pub(crate) const BINDINGS: &[Access] =
    &[Access::Read, Access::Read, Access::Read, Access::Write, Access::Write, Access::Write, Access::Read, Access::Read];
/// The cooperative-matrix kernel's: those of [`BINDINGS`], then k and v again as vec4 views.
pub(crate) const COOP_BINDINGS: &[Access] = &[
    Access::Read,
    Access::Read,
    Access::Read,
    Access::Write,
    Access::Write,
    Access::Write,
    Access::Read,
    Access::Read,
    Access::Read,
    Access::Read,
];

impl ForwardVariant {
    /// Workgroup memory the kernel declares, in bytes (mirrors the `var<workgroup>`s).
    pub fn workgroup_bytes(&self) -> u32 {
        let t = &self.tiles;
        let (m, n) = (t.block_m, t.block_n);
        match self.path {
            KernelPath::CooperativeMatrix | KernelPath::EmulatedCooperativeMatrix => {
                let dp = t.head_block * t.head_chunks;
                // emu_s: the emulation's operand exchange, 512 halves per subgroup (coop_emu.wgsl)
                let emu = if self.path == KernelPath::EmulatedCooperativeMatrix { t.workgroup_size / 32 * 1024 } else { 0 };
                // s_s, kv_s (Q passes through it unless q_s holds it), q_s, p_s, carry_s + live_s,
                // alive_s (forward/coop.wgsl), item_s (forward/io.wgsl)
                let qs = self.options.q_shared;
                let kv_rows = if qs { n } else { m.max(n) };
                let q_rows = if qs { m } else { 1 };
                m * (n + 4) * 4 + kv_rows * (dp + 8) * 2 + q_rows * (dp + 8) * 2 + m * (n + 8) * 2 + m * 8 + 16 + 32 + emu
            }
            _ => {
                let (dc, rg) = (t.head_block, t.workgroup_size / t.lanes_per_row());
                let (nj, vk) = portable_value_tiles(t);
                // q_s, k_s, p_s (rows padded by one vec4), v_s, live_s, alive_s, carry_s
                // (forward/portable.wgsl; the shared-memory scan reuses q_s), item_s (forward/io.wgsl)
                dc * (rg + 1) * 16 + dc * (n / 4 + 1) * 16 + n * (rg + 1) * 16 + vk * 8 * nj * 16 + rg * 4 + 4 + m * 4 + 32
            }
        }
    }

    /// The kernel's recipe.
    pub(crate) fn recipe(&self) -> Recipe {
        let t = &self.tiles;
        let (name, body, consts, extensions) = match self.path {
            KernelPath::CooperativeMatrix | KernelPath::EmulatedCooperativeMatrix => {
                let emulated = self.path == KernelPath::EmulatedCooperativeMatrix;
                let ops = if emulated { files::FORWARD_COOP_EMU } else { files::FORWARD_COOP_MAT };
                (
                    if emulated { "forward/coop-emulated" } else { "forward/coop" },
                    vec![Part(ops), Part(files::FORWARD_COOP)],
                    vec![
                        ("WG", t.workgroup_size),
                        ("BM", t.block_m),
                        ("BN", t.block_n),
                        ("ND", t.head_chunks),
                        ("PF", u32::from(self.options.prefetch)),
                        ("QS", u32::from(self.options.q_shared)),
                        ("HI", u32::from(self.options.heads_inner)),
                        ("SP", u32::from(self.options.scan_product)),
                    ],
                    // The scan's two invocations of a row trade run totals by subgroup shuffle.
                    Extensions { cooperative_matrix: !emulated, subgroups: true },
                )
            }
            path => {
                let subgroup = path == KernelPath::Subgroup;
                let scan = if subgroup { files::SCAN_SUBGROUP } else { files::FORWARD_SCAN_SHARED };
                (
                    if subgroup { "forward/subgroup" } else { "forward/shared" },
                    vec![Part(files::FORWARD_PORTABLE), Part(scan)],
                    {
                        let (nj, vk) = portable_value_tiles(t);
                        let (wg, bn, dc, mc) = (t.workgroup_size, t.block_n, t.head_block, t.head_chunks);
                        // Register prefetch for f32 storage only: measured on the H200 (B4 H12
                        // T4096 D128), f32 10.5 ms with it and 11.2 without, f16 12.4 with and
                        // 11.3 without.
                        let pf = u32::from(self.dtype == Dtype::F32);
                        let hi = u32::from(self.options.heads_inner);
                        vec![("WG", wg), ("BN", bn), ("DC", dc), ("MC", mc), ("NJ", nj), ("VK", vk), ("PF", pf), ("HI", hi)]
                    },
                    Extensions { subgroups: subgroup, ..Default::default() },
                )
            }
        };
        let mut parts = vec![Part(files::ADDR), Part(files::PAGES), Part(files::FORWARD_IO)];
        parts.extend(body);
        parts.push(Part(files::STICK));
        Recipe {
            name,
            dtype: self.dtype,
            parts,
            consts,
            // Contiguous unless the call is paged (`Recipe::with_paging`).
            overrides: vec![("PAGED", 0)],
            entry: "main",
            bindings: if self.path.is_cooperative() { COOP_BINDINGS } else { BINDINGS },
            extensions,
            zero_workgroup_memory: true,
            // The tensor-core kernel's indices are in range by construction (forward/coop.wgsl:
            // workgroup indices from invocation ids and constants; global ones below T, D and the
            // validated strides); the portable kernel keeps wgpu's clamping.
            trusted: self.path.is_cooperative(),
        }
    }
}

/// The portable kernel's tile shapes, largest first, as (invocations, keys per tile, head-dim
/// chunk of S); [`portable_tiles`] takes the first that fits the device's workgroup memory.
/// One kernel (forward/portable.wgsl), the shape in its prelude constants.
///
/// Every shape holds register tiles (named vec4s): 4 query rows x `block_n / 8` keys of S per
/// invocation, 8 invocations per group of 4 rows (an aligned run of 8 lanes, so the subgroup
/// scan holds at any subgroup size >= 8), and 8 rows x `head dim / 16` columns of O; so
/// `block_m` = invocations / 2. With f32 storage the next stage's q and k (or v) are loaded
/// into registers while the current one computes. Measured on the H200 at B4 H12 T4096 D128,
/// f32 storage (the kernel this replaced: 21.6 ms), the three shapes are within 5% of each
/// other (10.5, 10.8, 10.9 ms): the prefetch hides most of what more barriers cost.
/// - (128, 64, 32), 42 KiB at most (H200: 48 KiB; most desktop GPUs): 64 x 64 tiles, 32 S
///   accumulators, 21 FLOPs per workgroup-memory vec4 read in S and 32 in O at D = 128, and the
///   fewest barriers, 2 MC + 2 BN / VK - 2 per tile (14 at D = 128). 128 invocations, not 256:
///   with these register tiles 256 would mean 128 rows and a 32 KiB p_s.
/// - (128, 64, 16), 30 KiB at most (32 KiB: lavapipe, most browsers, Apple, Intel): the same
///   register tiles and FLOPs per read, head-dim chunks of 16 (twice the S barriers) and half
///   as many keys of v at once.
/// - (64, 32, 16), 13.2 KiB at most (WebGPU's default 16 KiB): 32 x 32 tiles, 16 S
///   accumulators (16 FLOPs per read in S).
const PORTABLE_SHAPES: [(u32, u32, u32); 3] = [(128, 64, 32), (128, 64, 16), (64, 32, 16)];

/// The tiles of one portable shape at `head_dim`.
fn portable_shape(head_dim: u32, (invocations, block_n, chunk): (u32, u32, u32)) -> TileConfig {
    TileConfig {
        block_m: invocations / 2,
        block_n,
        head_block: chunk,
        head_chunks: head_dim.div_ceil(chunk).max(1),
        workgroup_size: invocations,
    }
}

/// Portable tiles: the largest of [`PORTABLE_SHAPES`] whose workgroup memory fits
/// `workgroup_memory` bytes (else the smallest, which `choose` then reports as over the limit).
fn portable_tiles(head_dim: u32, workgroup_memory: u32) -> TileConfig {
    let fits = |t: &TileConfig| {
        let v = ForwardVariant { dtype: Dtype::F32, path: KernelPath::SharedMemory, tiles: *t, options: KernelOptions::default() };
        v.workgroup_bytes() <= workgroup_memory
    };
    let smallest = portable_shape(head_dim, PORTABLE_SHAPES[PORTABLE_SHAPES.len() - 1]);
    PORTABLE_SHAPES.iter().map(|s| portable_shape(head_dim, *s)).find(fits).unwrap_or(smallest)
}

/// The portable kernel's output tiling, derived from its tiles: `NJ` column groups of 32, even
/// (the head dim padded to 64 NJ / 2: each of 16 column lanes takes NJ / 2 vec4s of a row), and
/// `VK` keys of v staged at once. v_s holds at most 16 `DC` vec4s (as many as an unpadded q_s),
/// so VK is the largest power of two up to `block_n` with VK x 8 NJ <= 16 DC (at least 4: the
/// kernel's P V loop is unrolled by 4).
fn portable_value_tiles(t: &TileConfig) -> (u32, u32) {
    let nj = (t.head_block * t.head_chunks).div_ceil(64) * 2;
    let vk = 1u32 << (2 * t.head_block / nj).max(1).ilog2();
    (nj, vk.min(t.block_n))
}

/// Cooperative-matrix tiles: 64 rows (4 subgroups x 16) x `block_n` keys, head dim in blocks
/// of 16.
fn coop_tiles(head_dim: u32, block_n: u32) -> TileConfig {
    TileConfig {
        block_m: 64,
        block_n,
        head_block: 16,
        head_chunks: head_dim.div_ceil(16).max(1),
        workgroup_size: 4 * COOP_SUBGROUP,
    }
}

/// Why the cooperative-matrix kernel (on tensor cores, or `emulated`) cannot take a call, or
/// `None` when it can. `aligned_kv` says whether the call's k and v suit its direct matrix loads
/// (offsets and token strides multiples of 8 elements).
fn coop_unmet(caps: &Capabilities, dtype: Dtype, head_dim: u32, aligned_kv: bool, emulated: bool) -> Option<String> {
    let mut unmet = Vec::new();
    if dtype != Dtype::F16 {
        unmet.push(format!("f16 data (got {dtype:?})"));
    }
    if head_dim > COOP_MAX_HEAD_DIM || !head_dim.is_multiple_of(16) {
        unmet.push(format!("a head dim that is a multiple of 16 up to {COOP_MAX_HEAD_DIM} (got {head_dim})"));
    }
    if !aligned_kv {
        unmet.push("k and v offsets and token strides that are multiples of 8 elements".into());
    }
    if emulated && !(caps.f16() && caps.subgroups()) {
        unmet.push("Features::SHADER_F16 and subgroups (the emulation trades values by shuffle)".into());
    }
    if !emulated && (!caps.cooperative_f16() || !caps.features.contains(wgpu::Features::SUBGROUP)) {
        unmet.push(format!(
            "Features::EXPERIMENTAL_COOPERATIVE_MATRIX and SUBGROUP with 16x16x16 f16 -> f32 listed by the adapter and \
             subgroups of exactly {COOP_SUBGROUP} (this device: EXPERIMENTAL_COOPERATIVE_MATRIX {}, SUBGROUP {}, {} \
             configurations listed, subgroups {}..={})",
            caps.features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX),
            caps.features.contains(wgpu::Features::SUBGROUP),
            caps.cooperative_matrices.len(),
            caps.subgroup_min_size,
            caps.subgroup_max_size
        ));
    }
    (!unmet.is_empty()).then(|| unmet.join("; "))
}

/// Chooses the variant for a call: the requested path if the device can run it (an error if it
/// cannot), else the fastest it can.
///
/// # Errors
/// [`Error::Unsupported`] when the dtype or forced path needs what the device lacks,
/// [`Error::InvalidParameter`] for a bad tuning value, and [`Error::Limit`] when the device's
/// workgroup limits are below what the kernel needs.
pub fn choose(
    caps: &Capabilities,
    dtype: Dtype,
    head_dim: u32,
    requested: KernelPath,
    aligned_kv: bool,
    tuning: &ForwardTuning,
) -> Result<ForwardVariant> {
    check_dtype(caps, dtype)?;
    if head_dim == 0 || head_dim > MAX_HEAD_DIM {
        return Err(Error::HeadDim { head_dim, max: MAX_HEAD_DIM });
    }
    if let Some(n) = tuning.coop_block_n.filter(|n| ![32, 64].contains(n)) {
        return Err(Error::InvalidParameter { name: "coop_block_n", reason: format!("{n} is not 32 or 64") });
    }
    let coop = coop_unmet(caps, dtype, head_dim, aligned_kv, false);
    let path = match requested {
        // Tensor cores first: both matrix products on them, 3x the portable kernels on the H200.
        KernelPath::Auto if coop.is_none() => KernelPath::CooperativeMatrix,
        // Then the subgroup scan: no workgroup memory round trip per key tile.
        KernelPath::Auto if caps.subgroups() => KernelPath::Subgroup,
        // Everywhere else, browsers included.
        KernelPath::Auto => KernelPath::SharedMemory,
        KernelPath::Subgroup if !caps.subgroups() => {
            return Err(Error::Unsupported(format!(
                "the subgroup path needs Features::SUBGROUP and power-of-two subgroups of at least {MIN_SUBGROUP} \
                 invocations (device: feature {}, sizes {}..={})",
                caps.features.contains(wgpu::Features::SUBGROUP),
                caps.subgroup_min_size,
                caps.subgroup_max_size
            )))
        }
        KernelPath::CooperativeMatrix if coop.is_some() => {
            return Err(Error::Unsupported(format!("the cooperative-matrix path needs {}", coop.unwrap_or_default())));
        }
        KernelPath::EmulatedCooperativeMatrix => {
            if let Some(unmet) = coop_unmet(caps, dtype, head_dim, aligned_kv, true) {
                return Err(Error::Unsupported(format!("the emulated cooperative-matrix path needs {unmet}")));
            }
            requested
        }
        p => p,
    };
    let tiles = match path {
        KernelPath::CooperativeMatrix => coop_tiles(head_dim, tuning.coop_block_n.unwrap_or(coop_block_n(head_dim))),
        // 32-key tiles: the emulation's own workgroup memory must fit beside the kernel's.
        KernelPath::EmulatedCooperativeMatrix => coop_tiles(head_dim, tuning.coop_block_n.unwrap_or(32)),
        _ => portable_tiles(head_dim, caps.limits.max_compute_workgroup_storage_size),
    };
    let defaults = KernelOptions::default();
    let options = KernelOptions {
        prefetch: tuning.coop_prefetch.unwrap_or(!path.is_cooperative() || COOP_PREFETCH),
        q_shared: path.is_cooperative() && tuning.coop_q_shared.unwrap_or(defaults.q_shared),
        heads_inner: tuning.heads_inner.unwrap_or(defaults.heads_inner),
        scan_product: path.is_cooperative() && tuning.coop_scan_product.unwrap_or(COOP_SCAN_PRODUCT),
    };
    let variant = ForwardVariant { dtype, path, tiles, options };
    check_workgroup(&caps.limits, tiles.workgroup_size, variant.workgroup_bytes())?;
    Ok(variant)
}

/// Every forward variant the crate can build, for offline validation.
pub(crate) fn all_variants() -> Vec<ForwardVariant> {
    let mut out = Vec::new();
    for dtype in [Dtype::F32, Dtype::F16] {
        for path in [KernelPath::Subgroup, KernelPath::SharedMemory] {
            for shape in PORTABLE_SHAPES {
                for chunks in 1..=MAX_HEAD_DIM.div_ceil(shape.2) {
                    for heads_inner in [false, true] {
                        let options = KernelOptions { heads_inner, ..KernelOptions::default() };
                        out.push(ForwardVariant { dtype, path, tiles: portable_shape(chunks * shape.2, shape), options });
                    }
                }
            }
        }
    }
    for blocks in 1..=COOP_MAX_HEAD_DIM / 16 {
        for block_n in [32, 64] {
            let tiles = coop_tiles(blocks * 16, block_n);
            for path in [KernelPath::CooperativeMatrix, KernelPath::EmulatedCooperativeMatrix] {
                for bits in 0..16u32 {
                    let options = KernelOptions {
                        prefetch: bits & 1 != 0,
                        q_shared: bits & 2 != 0,
                        heads_inner: bits & 4 != 0,
                        scan_product: bits & 8 != 0,
                    };
                    out.push(ForwardVariant { dtype: Dtype::F16, path, tiles, options });
                }
            }
        }
    }
    out
}
