//! The decode kernels' uniform parameters (`Params` in shaders/decode/partial.wgsl and
//! shaders/decode/merge.wgsl).

use crate::kernel::uniform::{params, Addr, Pages};

params! {
    /// Parameters of the partial (split-K) kernel.
    pub(crate) struct DecodeParams {
        h: u32,
        group: u32,
        n: u32,
        d: u32,
        rows: u32,
        row_blocks: u32,
        splits: u32,
        flags: u32,
        q: Addr,
        k: Addr,
        v: Addr,
        scale: f32,
        log_eps: f32,
        capacity: u32,
        later: u32,
        pg: Pages,
    }
}

params! {
    /// Parameters of the merge kernel.
    pub(crate) struct MergeParams {
        h: u32,
        n: u32,
        d: u32,
        splits: u32,
        dp4: u32,
        group: u32,
        flags: u32,
        capacity: u32,
        o: Addr,
        v: Addr,
        rem_off: u32,
        lrem_off: u32,
        bias_off: u32,
        cw: u32,
        parts: u32,
        part: u32,
        po_off: u32,
        ps_off: u32,
        pg: Pages,
    }
}
