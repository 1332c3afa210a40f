//! The backward kernels' variants and tiles: one pure function of the device's capabilities and
//! the call, a reason per branch.

use crate::caps::{Capabilities, MIN_SUBGROUP};
use crate::kernel::source::{files, Extensions, Part, Recipe};
use crate::ops::common::{check_dtype, check_workgroup};
use crate::tensor::Access;
use crate::{Dtype, Error, KernelPath, Result, MAX_HEAD_DIM};

/// Rows per workgroup of the preparation kernel (one invocation per row), and so the rows each
/// `dbias` partial sum covers.
pub const PREP_ROWS: u32 = 64;
/// Invocations of the `dbias` kernel (one column each, looping over the head dim).
const DBIAS_WORKGROUP: u32 = 64;

/// Tile sizes of the dq and dkv kernels (the two use the same, so that the dkv kernel rebuilds
/// exactly the blocks the dq kernel walked).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BackwardTiles {
    /// Query rows per tile and keys per tile (equal: `workgroup_size / 2`).
    pub block: u32,
    /// Head-dim columns staged at once for the score products `Q K^T` and `dO V^T`.
    pub head_block: u32,
    /// Column groups of 32 of the accumulators (`dq`, `dk`, `dv`): head dims up to `32 x` this.
    pub col_groups: u32,
    /// Rows (keys) of the accumulated operand staged at once (divides `block`).
    pub stage_rows: u32,
    /// Invocations per workgroup: 8 lanes per group of 4 rows (or keys).
    pub workgroup_size: u32,
}

/// One compiled pair of backward kernels (dq and dkv): storage type, scan path and tiles. The
/// preparation and `dbias` kernels depend on the storage type only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BackwardVariant {
    /// Storage type.
    pub dtype: Dtype,
    /// Scan path: [`KernelPath::Subgroup`] or [`KernelPath::SharedMemory`].
    pub path: KernelPath,
    /// Tile sizes.
    pub tiles: BackwardTiles,
}

/// Bindings of the preparation kernel (shaders/backward/prep.wgsl): o, do, v, log_rem, d_rem,
/// bias read; the scratch written.
pub(crate) const PREP_BINDINGS: &[Access] =
    &[Access::Read, Access::Read, Access::Read, Access::Read, Access::Read, Access::Read, Access::Write];
/// Bindings of the dq kernel: q, k, v, do read; dq and the scratch written.
pub(crate) const DQ_BINDINGS: &[Access] = &[Access::Read, Access::Read, Access::Read, Access::Read, Access::Write, Access::Write];
/// Bindings of the dkv kernel: q, k, v, do and the scratch read; dk, dv written.
pub(crate) const DKV_BINDINGS: &[Access] =
    &[Access::Read, Access::Read, Access::Read, Access::Read, Access::Read, Access::Write, Access::Write];
/// Bindings of the dbias kernel: the scratch read, dbias written.
pub(crate) const DBIAS_BINDINGS: &[Access] = &[Access::Read, Access::Write];

/// Tile shapes, largest first, as (invocations, rows = keys per tile, head-dim chunk of the
/// score products); [`choose`] takes the first whose workgroup memory fits the device. Each
/// invocation holds 4 rows x `block / 8` keys of both score blocks and 4 rows (keys) x
/// `4 col_groups` columns of two accumulators (dq and `Y`, or dk and dv).
/// - (128, 64, 32), 34 KiB (H200's 48 and most desktop GPUs): 64 x 64 blocks, the fewest
///   barriers per block.
/// - (128, 64, 16), 25.5 KiB (32 KiB: lavapipe, browsers that raise the limit, Apple, Intel):
///   the same blocks and registers, half-width staging.
/// - (64, 32, 16), 9 KiB (WebGPU's default 16 KiB): 32 x 32 blocks.
const SHAPES: [(u32, u32, u32); 3] = [(128, 64, 32), (128, 64, 16), (64, 32, 16)];

impl BackwardTiles {
    /// vec4s of the staging area `st_s` (two transposed score chunks, rows padded by one vec4).
    fn staging_vec4s(workgroup_size: u32, head_block: u32) -> u32 {
        2 * head_block * (workgroup_size / 8 + 1)
    }

    /// The tiles of one shape at `head_dim`.
    fn of(head_dim: u32, (workgroup_size, block, head_block): (u32, u32, u32)) -> Self {
        let col_groups = head_dim.div_ceil(32).max(1);
        // VK: the largest power of two up to the block whose rows of 32 NJ columns fit st_s.
        let fit = Self::staging_vec4s(workgroup_size, head_block) / (8 * col_groups);
        let stage_rows = 1u32 << fit.min(block).max(1).ilog2();
        BackwardTiles { block, head_block, col_groups, stage_rows, workgroup_size }
    }
}

impl BackwardVariant {
    /// Workgroup memory of the dq and dkv kernels, in bytes (mirrors `st_s` and `p_s` in
    /// shaders/backward/tile.wgsl).
    pub fn workgroup_bytes(&self) -> u32 {
        let t = &self.tiles;
        let pw = t.workgroup_size / 8 + 1;
        16 * (BackwardTiles::staging_vec4s(t.workgroup_size, t.head_block) + t.block * pw)
    }

    /// Head-dim chunks of the score products at `head_dim` (a parameter, not a constant).
    pub fn head_chunks(&self, head_dim: u32) -> u32 {
        head_dim.div_ceil(self.tiles.head_block).max(1)
    }

    fn tile_recipe(&self, dkv: bool) -> Recipe {
        let t = &self.tiles;
        let subgroup = self.path == KernelPath::Subgroup;
        let scan = if subgroup { files::SCAN_SUBGROUP } else { files::BACKWARD_SCAN_SHARED };
        let (kernel, bindings) = if dkv { (files::BACKWARD_DKV, DKV_BINDINGS) } else { (files::BACKWARD_DQ, DQ_BINDINGS) };
        let name = match (dkv, subgroup) {
            (false, true) => "backward/dq-subgroup",
            (false, false) => "backward/dq-shared",
            (true, true) => "backward/dkv-subgroup",
            (true, false) => "backward/dkv-shared",
        };
        Recipe {
            name,
            dtype: self.dtype,
            parts: vec![Part(files::ADDR), Part(files::BACKWARD_IO), Part(kernel), Part(files::BACKWARD_TILE), Part(scan), Part(files::STICK)],
            consts: vec![("WG", t.workgroup_size), ("BN", t.block), ("DC", t.head_block), ("NJ", t.col_groups), ("VK", t.stage_rows)],
            overrides: Vec::new(),
            entry: "main",
            bindings,
            extensions: Extensions { subgroups: subgroup, ..Default::default() },
            zero_workgroup_memory: true,
            trusted: false,
        }
    }

    /// The dq kernel's recipe.
    pub(crate) fn dq_recipe(&self) -> Recipe {
        self.tile_recipe(false)
    }

    /// The dkv kernel's recipe.
    pub(crate) fn dkv_recipe(&self) -> Recipe {
        self.tile_recipe(true)
    }
}

/// The preparation kernel's recipe (per storage type).
pub(crate) fn prep_recipe(dtype: Dtype) -> Recipe {
    Recipe {
        name: "backward/prep",
        dtype,
        parts: vec![Part(files::ADDR), Part(files::BACKWARD_IO), Part(files::BACKWARD_PREP)],
        consts: vec![("WG", PREP_ROWS)],
        overrides: Vec::new(),
        entry: "main",
        bindings: PREP_BINDINGS,
        extensions: Extensions::default(),
        zero_workgroup_memory: true,
        trusted: false,
    }
}

/// The `dbias` kernel's recipe (f32 scratch in, f32 `dbias` out, whatever the storage type).
pub(crate) fn dbias_recipe() -> Recipe {
    Recipe {
        name: "backward/dbias",
        dtype: Dtype::F32,
        parts: vec![Part(files::ADDR), Part(files::BACKWARD_IO), Part(files::BACKWARD_DBIAS)],
        consts: vec![("WG", DBIAS_WORKGROUP)],
        overrides: Vec::new(),
        entry: "main",
        bindings: DBIAS_BINDINGS,
        extensions: Extensions::default(),
        zero_workgroup_memory: true,
        trusted: false,
    }
}

/// Chooses the backward variant for a call: the requested scan path if the device can run it
/// (an error if it cannot), else the fastest it can, with the largest tiles that fit its
/// workgroup memory.
///
/// # Errors
/// [`Error::HeadDim`] outside `1..=MAX_HEAD_DIM`; [`Error::Unsupported`] for f16 without
/// `SHADER_F16`, a forced subgroup path without usable subgroups, or a cooperative-matrix path
/// (the backward pass has none yet); [`Error::Limit`] when even the smallest tiles exceed the
/// device's workgroup limits.
pub fn choose(caps: &Capabilities, dtype: Dtype, head_dim: u32, requested: KernelPath) -> Result<BackwardVariant> {
    check_dtype(caps, dtype)?;
    if head_dim == 0 || head_dim > MAX_HEAD_DIM {
        return Err(Error::HeadDim { head_dim, max: MAX_HEAD_DIM });
    }
    let path = match requested {
        // The subgroup scans: no workgroup-memory round trip (4 barriers per block fewer).
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
            )));
        }
        KernelPath::Subgroup | KernelPath::SharedMemory => requested,
        // Not written yet: the matrix products of tile.wgsl are where cooperative matrices
        // would go.
        other => {
            return Err(Error::Unsupported(format!(
                "the backward pass has no {other:?} kernel (it runs KernelPath::Subgroup or KernelPath::SharedMemory)"
            )));
        }
    };
    let fits = |v: &BackwardVariant| v.workgroup_bytes() <= caps.limits.max_compute_workgroup_storage_size;
    let variants = SHAPES.map(|s| BackwardVariant { dtype, path, tiles: BackwardTiles::of(head_dim, s) });
    let variant = variants.iter().copied().find(fits).unwrap_or(variants[SHAPES.len() - 1]);
    check_workgroup(&caps.limits, variant.tiles.workgroup_size, variant.workgroup_bytes())?;
    Ok(variant)
}

/// Every dq/dkv variant the crate can build, for offline validation.
pub(crate) fn all_variants() -> Vec<BackwardVariant> {
    let mut out = Vec::new();
    for dtype in [Dtype::F32, Dtype::F16] {
        for path in [KernelPath::Subgroup, KernelPath::SharedMemory] {
            for shape in SHAPES {
                for col_groups in 1..=MAX_HEAD_DIM / 32 {
                    out.push(BackwardVariant { dtype, path, tiles: BackwardTiles::of(32 * col_groups, shape) });
                }
            }
        }
    }
    out
}

/// Every recipe of the backward op: dq and dkv of every variant, prep per storage type, dbias.
pub(crate) fn all_recipes() -> Vec<Recipe> {
    let mut out = Vec::new();
    for v in all_variants() {
        out.push(v.dq_recipe());
        out.push(v.dkv_recipe());
    }
    out.extend([prep_recipe(Dtype::F32), prep_recipe(Dtype::F16), dbias_recipe()]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(workgroup_memory: u32) -> Capabilities {
        let limits = wgpu::Limits { max_compute_workgroup_storage_size: workgroup_memory, ..wgpu::Limits::default() };
        Capabilities::plain(wgpu::Features::SUBGROUP | wgpu::Features::SHADER_F16, limits, 32)
    }

    #[test]
    fn tiles_follow_the_workgroup_memory() {
        for (memory, block, chunk) in [(48 * 1024, 64, 32), (32 * 1024, 64, 16), (16 * 1024, 32, 16)] {
            let v = choose(&caps(memory), Dtype::F16, 128, KernelPath::Auto).unwrap();
            assert_eq!((v.tiles.block, v.tiles.head_block, v.path), (block, chunk, KernelPath::Subgroup));
            assert!(v.workgroup_bytes() <= memory);
        }
        assert!(matches!(choose(&caps(8 * 1024), Dtype::F32, 64, KernelPath::Auto), Err(Error::Limit { .. })));
    }

    #[test]
    fn staged_rows_fit_the_staging_area() {
        for v in all_variants() {
            let t = v.tiles;
            let staging = BackwardTiles::staging_vec4s(t.workgroup_size, t.head_block);
            assert!(t.stage_rows * 8 * t.col_groups <= staging, "{v:?}");
            assert!(t.block.is_multiple_of(t.stage_rows) && t.stage_rows >= 1, "{v:?}");
            // The shared-memory scan's lane totals: 2 segments x 8 lanes x row groups.
            assert!(16 * t.workgroup_size / 8 <= staging, "{v:?}");
            assert_eq!(t.block, t.workgroup_size / 2, "{v:?}");
        }
    }

    #[test]
    fn no_cooperative_backward() {
        for path in [KernelPath::CooperativeMatrix, KernelPath::EmulatedCooperativeMatrix] {
            assert!(matches!(choose(&caps(48 * 1024), Dtype::F16, 64, path), Err(Error::Unsupported(_))));
        }
    }
}
