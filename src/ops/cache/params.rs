//! The append kernels' uniform parameters (`Params` in shaders/cache/append.wgsl).

use crate::kernel::uniform::{params, Addr, Pages};

params! {
    /// Parameters of both append entry points.
    pub(crate) struct AppendParams {
        n: u32,
        batch: u32,
        d: u32,
        capacity: u32,
        kn: Addr,
        vn: Addr,
        kc: Addr,
        vc: Addr,
        pg: Pages,
    }
}
