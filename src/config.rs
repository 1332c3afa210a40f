//! What the device offers, and the one place that turns it into a kernel variant and tiles.

use crate::{Dtype, Error, Path, Result};

/// Lanes per query row of the portable kernels, 4 keys each (see `shaders/forward.wgsl`). 8
/// fits the subgroup of every adapter that reports at least 8 (lavapipe, Intel, NVIDIA, AMD,
/// Apple, Qualcomm) and gives 32 x 32 tiles in a 256-invocation workgroup.
const LANES_PER_ROW: u32 = 8;
/// Invocations per workgroup of the portable kernels: the WebGPU default limit.
pub const WORKGROUP_SIZE: u32 = 256;
/// Subgroup size the cooperative-matrix kernel is written for (4 subgroups of 32).
const COOP_SUBGROUP: u32 = 32;
/// Largest head dim of the cooperative-matrix kernel (8 accumulator blocks of 16).
pub const COOP_MAX_HEAD_DIM: u32 = 128;

/// The parts of an adapter and device the kernels care about.
#[derive(Clone, Debug)]
pub struct Capabilities {
    /// The adapter behind the device.
    pub adapter: wgpu::AdapterInfo,
    /// Features enabled on the device.
    pub features: wgpu::Features,
    /// Limits of the device.
    pub limits: wgpu::Limits,
    /// Cooperative-matrix configurations of the adapter (empty when unknown: a device given
    /// without its adapter).
    pub cooperative_matrices: Vec<wgpu::CooperativeMatrixProperties>,
    /// Profiling and tuning runs only, read once from the environment when the capabilities
    /// are read (never on the per-call path): `SBATTN_PROFILE_SKIP` (see
    /// [`Variant::profile_skip`]) and `SBATTN_COOP_BLOCK_N` (32 or 64 keys per tensor-core tile).
    #[doc(hidden)]
    pub tuning: Tuning,
}

/// Experiment knobs (see [`Capabilities::tuning`]); the defaults are what ships.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tuning {
    pub profile_skip: u32,
    pub coop_block_n: Option<u32>,
}

impl Tuning {
    fn from_env() -> Self {
        Tuning {
            profile_skip: env_u32("SBATTN_PROFILE_SKIP").unwrap_or(0),
            coop_block_n: env_u32("SBATTN_COOP_BLOCK_N").filter(|n| [32, 64].contains(n)),
        }
    }
}

impl Capabilities {
    /// Reads the capabilities of `device`; `adapter`, when given, adds its cooperative-matrix
    /// configurations (wgpu reports them on the adapter only).
    pub fn of(device: &wgpu::Device, adapter: Option<&wgpu::Adapter>) -> Self {
        Capabilities {
            adapter: device.adapter_info(),
            features: device.features(),
            limits: device.limits(),
            cooperative_matrices: adapter.map(|a| a.cooperative_matrix_properties()).unwrap_or_default(),
            tuning: Tuning::from_env(),
        }
    }

    /// f16 storage and arithmetic are enabled.
    pub fn f16(&self) -> bool {
        self.features.contains(wgpu::Features::SHADER_F16)
    }

    /// The subgroup scan can run: subgroups enabled, and every subgroup size the adapter may
    /// use is a multiple of the lanes of one row.
    pub fn subgroup_scan(&self) -> bool {
        let (min, max) = (self.adapter.subgroup_min_size, self.adapter.subgroup_max_size);
        self.features.contains(wgpu::Features::SUBGROUP)
            && min >= LANES_PER_ROW
            && min.is_power_of_two()
            && max <= WORKGROUP_SIZE
    }

    /// The cooperative-matrix kernel can run: the feature is enabled, the adapter lists
    /// 16x16x16 f16 x f16 -> f32, and subgroups are always 32 wide.
    pub fn cooperative_f16(&self) -> bool {
        use wgpu::CooperativeScalarType as S;
        let listed = self.cooperative_matrices.iter().any(|c| {
            (c.m_size, c.n_size, c.k_size) == (16, 16, 16) && c.ab_type == S::F16 && c.cr_type == S::F32
        });
        self.features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX | wgpu::Features::SHADER_F16)
            && listed
            && self.adapter.subgroup_min_size == COOP_SUBGROUP
            && self.adapter.subgroup_max_size == COOP_SUBGROUP
    }
}

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
    /// Invocations sharing one query row in the portable kernels (4 keys each).
    pub fn lanes_per_row(&self) -> u32 {
        self.block_n / 4
    }

    /// Workgroup memory the kernel of `path` declares, in bytes.
    pub fn workgroup_bytes(&self, path: Path) -> u32 {
        let (m, n) = (self.block_m, self.block_n);
        match path {
            Path::CooperativeMatrix => {
                let dp = self.head_block * self.head_chunks;
                // s_s, stage, p_s, tot_s, carry_s + live_s, alive_s (forward_coop.wgsl)
                m * (n + 4) * 4 + m * (dp + 8) * 2 + m * (n + 8) * 2 + self.workgroup_size * 4 + m * 8 + 16
            }
            _ => {
                let g = self.lanes_per_row();
                let q = m * (g + 1) * 16;
                let kv = n * g * 16;
                let p = m * (g + 1) * 16;
                let scan = if path == Path::SharedMemory { self.workgroup_size * 4 } else { 0 };
                q + kv + p + scan + m * 4 + 4
            }
        }
    }
}

/// One compiled kernel: the pipeline cache's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Variant {
    /// Storage type.
    pub dtype: Dtype,
    /// Kernel path (never [`Path::Auto`]).
    pub path: Path,
    /// Tile sizes.
    pub tiles: TileConfig,
    /// Profiling only: stages the kernel skips (bit 0 the score product, bit 1 the scan, bit
    /// 2 the value product), giving wrong results on purpose so that timing each variant
    /// shows where the time goes. From [`Capabilities::tuning`]; 0 otherwise.
    #[doc(hidden)]
    pub profile_skip: u32,
}

/// A numeric environment variable (native only; profiling and tuning experiments).
fn env_u32(name: &str) -> Option<u32> {
    if cfg!(target_arch = "wasm32") {
        return None;
    }
    std::env::var(name).ok()?.parse().ok()
}

/// Portable tiles: 32 rows x 32 keys, head dim in chunks of 32.
fn portable_tiles(head_dim: u32) -> TileConfig {
    let chunk = 4 * LANES_PER_ROW;
    TileConfig {
        block_m: WORKGROUP_SIZE / LANES_PER_ROW,
        block_n: chunk,
        head_block: chunk,
        head_chunks: head_dim.div_ceil(chunk).max(1),
        workgroup_size: WORKGROUP_SIZE,
    }
}

/// Cooperative-matrix tiles: 64 rows (4 subgroups x 16) x `block_n` keys, head dim in
/// blocks of 16.
fn coop_tiles(head_dim: u32, block_n: u32) -> TileConfig {
    TileConfig {
        block_m: 64,
        block_n,
        head_block: 16,
        head_chunks: head_dim.div_ceil(16).max(1),
        workgroup_size: 4 * COOP_SUBGROUP,
    }
}

/// Keys per tile of the cooperative-matrix kernel.
const COOP_BLOCK_N: u32 = 64;

/// Chooses the variant for a call: the requested path if the device can run it (an error if
/// it cannot), else the fastest it can. `coop_layout` says whether the call's k and v suit the
/// cooperative-matrix kernel's direct matrix loads (offsets and token strides multiples of 8
/// elements); [`Attention::plan`](crate::Attention::plan) assumes they do.
///
/// # Errors
/// [`Error::Unsupported`] when the dtype or forced path needs a feature the device lacks, and
/// [`Error::Limit`] when the device's workgroup limits are below what the kernel needs.
pub fn choose(caps: &Capabilities, dtype: Dtype, head_dim: u32, requested: Path, coop_layout: bool) -> Result<Variant> {
    if dtype == Dtype::F16 && !caps.f16() {
        return Err(Error::Unsupported("f16 needs Features::SHADER_F16 on the device".into()));
    }
    let coop_ok = dtype == Dtype::F16
        && caps.cooperative_f16()
        && head_dim <= COOP_MAX_HEAD_DIM
        && head_dim.is_multiple_of(16)
        && coop_layout;
    let path = match requested {
        Path::Auto if coop_ok => Path::CooperativeMatrix,
        Path::Auto if caps.subgroup_scan() => Path::Subgroup,
        Path::Auto => Path::SharedMemory,
        Path::Subgroup if !caps.subgroup_scan() => {
            return Err(Error::Unsupported(format!(
                "the subgroup path needs Features::SUBGROUP and subgroups of {LANES_PER_ROW}..={WORKGROUP_SIZE} \
                 invocations (device: {}, sizes {}..={})",
                caps.features.contains(wgpu::Features::SUBGROUP),
                caps.adapter.subgroup_min_size,
                caps.adapter.subgroup_max_size
            )))
        }
        Path::CooperativeMatrix if !coop_ok => {
            let mut unmet = Vec::new();
            if dtype != Dtype::F16 {
                unmet.push(format!("f16 data (got {dtype:?})"));
            }
            if head_dim > COOP_MAX_HEAD_DIM || !head_dim.is_multiple_of(16) {
                unmet.push(format!("a head dim that is a multiple of 16 up to {COOP_MAX_HEAD_DIM} (got {head_dim})"));
            }
            if !coop_layout {
                unmet.push("k and v offsets and token strides that are multiples of 8 elements".into());
            }
            if !caps.cooperative_f16() {
                unmet.push(format!(
                    "Features::EXPERIMENTAL_COOPERATIVE_MATRIX with 16x16x16 f16 -> f32 listed by the adapter and \
                     subgroups of exactly {COOP_SUBGROUP} (this device has neither or not both)"
                ));
            }
            return Err(Error::Unsupported(format!("the cooperative-matrix path needs {}", unmet.join("; "))));
        }
        p => p,
    };
    let tiles = match path {
        Path::CooperativeMatrix => coop_tiles(head_dim, caps.tuning.coop_block_n.unwrap_or(COOP_BLOCK_N)),
        _ => portable_tiles(head_dim),
    };
    let l = &caps.limits;
    let checks = [
        ("workgroup invocations", tiles.workgroup_size, l.max_compute_invocations_per_workgroup),
        ("workgroup size x", tiles.workgroup_size, l.max_compute_workgroup_size_x),
        ("workgroup memory", tiles.workgroup_bytes(path), l.max_compute_workgroup_storage_size),
    ];
    for (what, value, limit) in checks {
        if value > limit {
            return Err(Error::Limit { what, value: value as u64, limit: limit as u64 });
        }
    }
    Ok(Variant { dtype, path, tiles, profile_skip: caps.tuning.profile_skip })
}

/// Every forward variant the crate can build, for offline validation.
pub fn all_variants() -> Vec<Variant> {
    let mut out = Vec::new();
    for dtype in [Dtype::F32, Dtype::F16] {
        for path in [Path::Subgroup, Path::SharedMemory] {
            let chunk = portable_tiles(1).head_block;
            for chunks in 1..=crate::MAX_HEAD_DIM.div_ceil(chunk) {
                out.push(Variant { dtype, path, tiles: portable_tiles(chunks * chunk), profile_skip: 0 });
            }
        }
    }
    for blocks in 1..=COOP_MAX_HEAD_DIM / 16 {
        for block_n in [32, COOP_BLOCK_N] {
            let tiles = coop_tiles(blocks * 16, block_n);
            out.push(Variant { dtype: Dtype::F16, path: Path::CooperativeMatrix, tiles, profile_skip: 0 });
        }
    }
    out
}
