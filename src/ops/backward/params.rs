//! The backward kernels' uniform parameters (`Params` in shaders/backward/io.wgsl).

use crate::kernel::uniform::{params, Addr};

params! {
    /// Parameters of every backward dispatch (one struct for the four kernels). Offsets and
    /// strides are in elements, relative to each binding's start; the scratch offsets are in
    /// f32 words.
    pub(crate) struct BackwardParams {
        t: u32,
        h: u32,
        group: u32,
        d: u32,
        q: Addr,
        k: Addr,
        v: Addr,
        o: Addr,
        d_o: Addr,
        dq: Addr,
        dk: Addr,
        dv: Addr,
        lrem_off: u32,
        drem_off: u32,
        bias_off: u32,
        dbias_off: u32,
        flags: u32,
        scale: f32,
        mc: u32,
        n_ktiles: u32,
        rows_off: u32,
        carry_off: u32,
        part_off: u32,
        n_ptiles: u32,
        batch: u32,
        n_stage: u32,
        _pad1: u32,
        _pad2: u32,
    }
}
