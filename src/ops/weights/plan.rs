//! The weights kernel's one variant per storage type: no tiles to choose (it is for
//! inspection, not speed), only what the device must offer.

use crate::kernel::source::{files, Extensions, Part, Recipe};
use crate::ops::common::{check_dtype, check_workgroup};
use crate::tensor::Access;
use crate::{Capabilities, Dtype, Result};

/// Invocations per workgroup (`WG`): one workgroup per query row, WebGPU's default limit.
pub(crate) const WORKGROUP: u32 = 256;
/// Workgroup memory the kernel declares: `q_s` (256 f32) and `scan_s` (`WORKGROUP` f32).
pub(crate) const WORKGROUP_BYTES: u32 = (256 + WORKGROUP) * 4;

/// The storage bindings (shaders/weights/weights.wgsl): q, k read; A, rem written.
pub(crate) const BINDINGS: &[Access] = &[Access::Read, Access::Read, Access::Write, Access::Write];

/// The kernel for `dtype` storage of q and k.
pub(crate) fn recipe(dtype: Dtype) -> Recipe {
    Recipe {
        name: "weights",
        dtype,
        parts: vec![Part(files::ADDR), Part(files::WEIGHTS), Part(files::STICK)],
        consts: vec![("WG", WORKGROUP)],
        overrides: Vec::new(),
        entry: "main",
        bindings: BINDINGS,
        extensions: Extensions::default(),
        // Both workgroup arrays are written before they are read.
        zero_workgroup_memory: false,
        // An inspection kernel: wgpu's index clamping stays on.
        trusted: false,
    }
}

/// Checks that the device can run the kernel for `dtype`.
///
/// # Errors
/// [`crate::Error::Unsupported`] for f16 without `SHADER_F16`, [`crate::Error::Limit`] below
/// 256 invocations or 2 KiB of workgroup memory.
pub(crate) fn check(caps: &Capabilities, dtype: Dtype) -> Result<()> {
    check_dtype(caps, dtype)?;
    check_workgroup(&caps.limits, WORKGROUP, WORKGROUP_BYTES)
}

/// Every weights variant, for offline validation.
pub(crate) fn all_recipes() -> Vec<Recipe> {
    [Dtype::F32, Dtype::F16].into_iter().map(recipe).collect()
}
