//! Per-dispatch parameters, laid out exactly as the WGSL `Params` struct of
//! `shaders/forward.wgsl` (a test checks it against naga's layout).

use bytemuck::{Pod, Zeroable};

/// Bit 0 of `flags`: row `i` sees key `i`.
pub(crate) const FLAG_ATTEND_CURRENT: u32 = 1;
/// Bits 1..2 of `flags`: remainder mode (0 discard, 1 return, 2 add `v_i`, 3 add `bias_h`).
pub(crate) const REM_SHIFT: u32 = 1;
/// Bit 3 of `flags`: write the final log of the stick left per row.
pub(crate) const FLAG_WRITE_LOG_REM: u32 = 8;
/// Bit 4 of `flags`: stop once every row of a tile has less than `exp(log_eps)` stick left.
pub(crate) const FLAG_EARLY_EXIT: u32 = 16;

/// Uniform parameters of one forward dispatch. Offsets and strides are in elements, relative
/// to each binding's start.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq)]
pub struct ForwardParams {
    pub t: u32,
    pub h: u32,
    pub group: u32,
    pub d: u32,
    pub q_off: u32,
    pub q_sb: u32,
    pub q_st: u32,
    pub q_sh: u32,
    pub k_off: u32,
    pub k_sb: u32,
    pub k_st: u32,
    pub k_sh: u32,
    pub v_off: u32,
    pub v_sb: u32,
    pub v_st: u32,
    pub v_sh: u32,
    pub o_off: u32,
    pub o_sb: u32,
    pub o_st: u32,
    pub o_sh: u32,
    pub rem_off: u32,
    pub lrem_off: u32,
    pub bias_off: u32,
    pub flags: u32,
    pub scale: f32,
    pub n_qtiles: u32,
    pub log_eps: f32,
    pub _pad0: u32,
}

/// Field names and byte offsets, in declaration order, for the layout test.
pub fn forward_params_fields() -> Vec<(&'static str, usize)> {
    macro_rules! fields {
        ($($f:ident),*) => { vec![$((stringify!($f), std::mem::offset_of!(ForwardParams, $f))),*] };
    }
    fields!(
        t, h, group, d, q_off, q_sb, q_st, q_sh, k_off, k_sb, k_st, k_sh, v_off, v_sb, v_st, v_sh,
        o_off, o_sb, o_st, o_sh, rem_off, lrem_off, bias_off, flags, scale, n_qtiles, log_eps, _pad0
    )
}
