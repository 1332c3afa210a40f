//! WGSL source of every kernel variant: a short generated prelude, then `.wgsl` files kept
//! as they are in `shaders/`.

use crate::config::Variant;
use crate::{Dtype, Path};

const FORWARD: &str = include_str!("../shaders/forward.wgsl");
const SCAN_SUBGROUP: &str = include_str!("../shaders/scan_subgroup.wgsl");
const SCAN_SHARED: &str = include_str!("../shaders/scan_shared.wgsl");

/// Who consumes the WGSL: enable-directives differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// wgpu's native backends (naga): `enable f16;`, and no `enable subgroups;` (naga 30
    /// rejects it and needs none).
    Native,
    /// A browser's WebGPU: `enable f16;` and `enable subgroups;` where used.
    Web,
}

impl Target {
    /// The target of the running build.
    pub fn current() -> Self {
        if cfg!(target_arch = "wasm32") { Target::Web } else { Target::Native }
    }
}

/// Complete WGSL of the forward kernel `variant` for `target`.
pub fn forward_source(variant: &Variant, target: Target) -> String {
    let mut s = String::new();
    if variant.dtype == Dtype::F16 {
        s.push_str("enable f16;\n");
    }
    if variant.path == Path::Subgroup && target == Target::Web {
        s.push_str("enable subgroups;\n");
    }
    let st = match variant.dtype {
        Dtype::F32 => "f32",
        Dtype::F16 => "f16",
    };
    s.push_str(&format!(
        "// variant: {variant:?}\nalias ST = {st};\nconst G: u32 = {}u;\nconst M: u32 = {}u;\n\n",
        variant.tiles.lanes_per_row, variant.tiles.head_chunks
    ));
    s.push_str(FORWARD);
    s.push('\n');
    s.push_str(match variant.path {
        Path::Subgroup => SCAN_SUBGROUP,
        _ => SCAN_SHARED,
    });
    s
}

/// `(name, WGSL)` of every kernel variant the crate can build for `target`, for offline
/// validation and translation (tests/shaders.rs). Each op adds its own variants here.
pub fn all_sources(target: Target) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = crate::config::all_variants()
        .iter()
        .map(|v| (format!("forward {v:?}"), forward_source(v, target)))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}
