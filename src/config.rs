//! What the device offers, and the one place that turns it into a kernel variant and tiles.

use crate::{Dtype, Error, Path, Result};

/// Lanes per query row, 4 keys each (see `shaders/forward.wgsl`). 8 keeps every per-thread
/// tile in named registers at any head dim up to 256 and fits the subgroup of every adapter
/// that reports at least 8 (lavapipe, Intel, NVIDIA, AMD, Apple, Qualcomm).
const LANES_PER_ROW: u32 = 8;
/// Invocations per workgroup: the WebGPU default limit, so one size fits every adapter.
pub const WORKGROUP_SIZE: u32 = 256;

/// The parts of an adapter and device the kernels care about.
#[derive(Clone, Debug)]
pub struct Capabilities {
    /// The adapter behind the device.
    pub adapter: wgpu::AdapterInfo,
    /// Features enabled on the device.
    pub features: wgpu::Features,
    /// Limits of the device.
    pub limits: wgpu::Limits,
}

impl Capabilities {
    /// Reads the capabilities of `device`.
    pub fn of(device: &wgpu::Device) -> Self {
        Capabilities { adapter: device.adapter_info(), features: device.features(), limits: device.limits() }
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
}

/// Tile sizes of the forward kernel. Everything else is derived from these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TileConfig {
    /// Invocations sharing one query row (`G`); each holds 4 consecutive keys of a tile.
    pub lanes_per_row: u32,
    /// Head-dim chunks of `chunk()` columns (`M`): the padded head dim is `M * chunk()`.
    pub head_chunks: u32,
}

impl TileConfig {
    /// Query rows per workgroup.
    pub fn block_m(&self) -> u32 {
        WORKGROUP_SIZE / self.lanes_per_row
    }
    /// Keys per tile.
    pub fn block_n(&self) -> u32 {
        4 * self.lanes_per_row
    }
    /// Head-dim columns staged per step.
    pub fn chunk(&self) -> u32 {
        4 * self.lanes_per_row
    }
    /// Workgroup memory the kernel declares, in bytes.
    pub fn workgroup_bytes(&self, path: Path) -> u32 {
        let g = self.lanes_per_row;
        let q = self.block_m() * (g + 1) * 16;
        let kv = self.block_n() * g * 16;
        let p = self.block_m() * (g + 1) * 16;
        let scan = if path == Path::SharedMemory { WORKGROUP_SIZE * 4 } else { 0 };
        q + kv + p + scan
    }
}

/// One compiled kernel: the pipeline cache's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Variant {
    /// Storage type.
    pub dtype: Dtype,
    /// Scan path (never [`Path::Auto`]).
    pub path: Path,
    /// Tile sizes.
    pub tiles: TileConfig,
}

/// Chooses the variant for a call: the requested path if the device can run it (an error if
/// it cannot), else the fastest it can.
///
/// # Errors
/// [`Error::Unsupported`] when the dtype or forced path needs a feature the device lacks, and
/// [`Error::Limit`] when the device's workgroup limits are below what the kernel needs.
pub fn choose(caps: &Capabilities, dtype: Dtype, head_dim: u32, requested: Path) -> Result<Variant> {
    if dtype == Dtype::F16 && !caps.f16() {
        return Err(Error::Unsupported("f16 needs Features::SHADER_F16 on the device".into()));
    }
    let path = match requested {
        Path::Auto if caps.subgroup_scan() => Path::Subgroup,
        Path::Auto => Path::SharedMemory,
        Path::Subgroup if !caps.subgroup_scan() => {
            return Err(Error::Unsupported(format!(
                "the subgroup path needs Features::SUBGROUP and subgroups of {LANES_PER_ROW}..={WORKGROUP_SIZE} \
                 invocations (adapter: {:?}, sizes {}..={})",
                caps.features.contains(wgpu::Features::SUBGROUP),
                caps.adapter.subgroup_min_size,
                caps.adapter.subgroup_max_size
            )))
        }
        p => p,
    };
    let lanes = LANES_PER_ROW;
    let chunk = 4 * lanes;
    let tiles = TileConfig { lanes_per_row: lanes, head_chunks: head_dim.div_ceil(chunk).max(1) };
    let l = &caps.limits;
    let checks = [
        ("workgroup invocations", WORKGROUP_SIZE, l.max_compute_invocations_per_workgroup),
        ("workgroup size x", WORKGROUP_SIZE, l.max_compute_workgroup_size_x),
        ("workgroup memory", tiles.workgroup_bytes(path), l.max_compute_workgroup_storage_size),
    ];
    for (what, value, limit) in checks {
        if value > limit {
            return Err(Error::Limit { what, value: value as u64, limit: limit as u64 });
        }
    }
    Ok(Variant { dtype, path, tiles })
}

/// Every variant the crate can build, for offline validation.
pub fn all_variants() -> Vec<Variant> {
    let mut out = Vec::new();
    for dtype in [Dtype::F32, Dtype::F16] {
        for path in [Path::Subgroup, Path::SharedMemory] {
            for head_chunks in 1..=crate::MAX_HEAD_DIM.div_ceil(4 * LANES_PER_ROW) {
                out.push(Variant { dtype, path, tiles: TileConfig { lanes_per_row: LANES_PER_ROW, head_chunks } });
            }
        }
    }
    out
}
