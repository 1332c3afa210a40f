//! The weights kernel's uniform parameters (`Params` in shaders/weights/weights.wgsl).

use crate::kernel::uniform::{params, Addr};

params! {
    /// Parameters of one weights dispatch. Offsets and strides are in elements, relative to
    /// each binding's start.
    pub(crate) struct WeightsParams {
        t: u32,
        h: u32,
        group: u32,
        d: u32,
        q: Addr,
        k: Addr,
        a_off: u32,
        rem_off: u32,
        flags: u32,
        scale: f32,
    }
}
