//! The forward kernels' uniform parameters (`Params` in shaders/forward/io.wgsl).

use crate::kernel::uniform::{params, Addr, Pages};

params! {
    /// Parameters of one forward dispatch. Offsets and strides are in elements, relative to
    /// each binding's start.
    pub(crate) struct ForwardParams {
        h: u32,
        group: u32,
        d: u32,
        batch: u32,
        q: Addr,
        k: Addr,
        v: Addr,
        o: Addr,
        pg: Pages,
        rem_off: u32,
        lrem_off: u32,
        bias_off: u32,
        flags: u32,
        scale: f32,
        log_eps: f32,
        rows_b: u32,
        rows_h: u32,
        n_work: u32,
        work_x: u32,
        seq_off: u32,
        q_tokens: u32,
        k_tokens: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}
