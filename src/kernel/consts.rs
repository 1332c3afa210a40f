//! Constants the host and the kernels share. Each is defined here once and written into the
//! generated WGSL prelude of every kernel ([`WGSL`]), so the two sides cannot drift apart.

/// Bit 0 of `Params.flags`: row `i` sees key `i` ([`crate::Mask::IncludeCurrent`]).
pub(crate) const FLAG_ATTEND_CURRENT: u32 = 1;
/// Bits 1..2 of `Params.flags`: the remainder mode, one of the `REM_*` values.
pub(crate) const REM_SHIFT: u32 = 1;
/// Remainder mode: drop it.
pub(crate) const REM_DISCARD: u32 = 0;
/// Remainder mode: write `rem_i`.
pub(crate) const REM_RETURN: u32 = 1;
/// Remainder mode: `o_i += rem_i v_i`.
pub(crate) const REM_ADD_VALUE: u32 = 2;
/// Remainder mode: `o_i += rem_i bias_h`.
pub(crate) const REM_ADD_BIAS: u32 = 3;
/// Bit 3 of `Params.flags`: write the final log of the stick left per row.
pub(crate) const FLAG_WRITE_LOG_REM: u32 = 8;
/// Bit 4 of `Params.flags`: stop once every row of a tile has less than `exp(log_eps)` stick left.
pub(crate) const FLAG_EARLY_EXIT: u32 = 16;
/// Bit 5 of the decode merge's flags: write the merged partial result (unnormalised output and
/// log of the stick spent, f32) instead of finishing the rows.
pub(crate) const FLAG_PARTIAL_OUT: u32 = 32;

/// Invocations per workgroup of the portable forward, decode and merge kernels: WebGPU's
/// default limit, so they run everywhere.
pub(crate) const WORKGROUP: u32 = 256;
/// Invocations per workgroup of the KV-cache append kernels (`AW`).
pub(crate) const APPEND_WORKGROUP: u32 = 64;
/// vec4s of workgroup memory the decode kernel's slot merge may use (`MERGE_VEC4`: 8 KiB).
pub(crate) const DECODE_MERGE_VEC4: u32 = 512;

/// The constants every kernel's prelude declares, by their WGSL names.
pub(crate) const WGSL: [(&str, u32); 9] = [
    ("FLAG_ATTEND_CURRENT", FLAG_ATTEND_CURRENT),
    ("REM_SHIFT", REM_SHIFT),
    ("REM_DISCARD", REM_DISCARD),
    ("REM_RETURN", REM_RETURN),
    ("REM_ADD_VALUE", REM_ADD_VALUE),
    ("REM_ADD_BIAS", REM_ADD_BIAS),
    ("FLAG_WRITE_LOG_REM", FLAG_WRITE_LOG_REM),
    ("FLAG_EARLY_EXIT", FLAG_EARLY_EXIT),
    ("FLAG_PARTIAL_OUT", FLAG_PARTIAL_OUT),
];
