//! WGSL source of every kernel variant: a short generated prelude, then `.wgsl` files kept
//! as they are in `shaders/`.

use crate::config::Variant;
use crate::decode::{DecodeVariant, Load};
use crate::{Dtype, Path};

const FORWARD: &str = include_str!("../shaders/forward.wgsl");
const FORWARD_IO: &str = include_str!("../shaders/forward_io.wgsl");
const FORWARD_COOP: &str = include_str!("../shaders/forward_coop.wgsl");
const SCAN_SUBGROUP: &str = include_str!("../shaders/scan_subgroup.wgsl");
const SCAN_SHARED: &str = include_str!("../shaders/scan_shared.wgsl");
const STICK: &str = include_str!("../shaders/stick.wgsl");
const DECODE: &str = include_str!("../shaders/decode.wgsl");
const DECODE_LOAD_VEC8: &str = include_str!("../shaders/decode_load_vec8.wgsl");
const DECODE_LOAD_VEC: &str = include_str!("../shaders/decode_load_vec.wgsl");
const DECODE_LOAD_SCALAR: &str = include_str!("../shaders/decode_load_scalar.wgsl");
const DECODE_SUBGROUP: &str = include_str!("../shaders/decode_subgroup.wgsl");
const DECODE_SHARED: &str = include_str!("../shaders/decode_shared.wgsl");
const DECODE_MERGE: &str = include_str!("../shaders/decode_merge.wgsl");
const KV_APPEND: &str = include_str!("../shaders/kv_append.wgsl");

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
    let t = &variant.tiles;
    let (consts, parts) = match variant.path {
        Path::CooperativeMatrix => (
            vec![("ND", t.head_chunks), ("BN", t.block_n), ("SKIP", variant.profile_skip)],
            [FORWARD_IO, FORWARD_COOP, STICK, ""],
        ),
        path => {
            let scan = if path == Path::Subgroup { SCAN_SUBGROUP } else { SCAN_SHARED };
            (vec![("G", t.lanes_per_row()), ("M", t.head_chunks)], [FORWARD_IO, FORWARD, STICK, scan])
        }
    };
    let mut s = prelude(&format!("{variant:?}"), variant.dtype, variant.path, target, &consts);
    for part in parts {
        s.push_str(part);
        s.push('\n');
    }
    s
}

/// The generated head of every kernel: enable-directives, the storage type `ST` and `u32`
/// constants.
fn prelude(name: &str, dtype: Dtype, path: Path, target: Target, consts: &[(&str, u32)]) -> String {
    let mut s = String::new();
    if dtype == Dtype::F16 {
        s.push_str("enable f16;\n");
    }
    if path == Path::Subgroup && target == Target::Web {
        s.push_str("enable subgroups;\n");
    }
    if path == Path::CooperativeMatrix {
        s.push_str("enable wgpu_cooperative_matrix;\n");
    }
    let st = match dtype {
        Dtype::F32 => "f32",
        Dtype::F16 => "f16",
    };
    s.push_str(&format!("// variant: {name}\nalias ST = {st};\n"));
    for (name, value) in consts {
        s.push_str(&format!("const {name}: u32 = {value}u;\n"));
    }
    s.push('\n');
    s
}

/// Complete WGSL of the decode (split-K partial) kernel `variant` for `target` (the same for
/// every `keys_per_step`: the pipeline sets it as the overridable constant `U`).
pub fn decode_source(variant: &DecodeVariant, target: Target) -> String {
    // `keys_per_step` is not here: it is the pipeline-overridable constant `U`.
    let consts = [("P", variant.lanes), ("M", variant.cols), ("R", variant.rows), ("W", variant.load.vec4s())];
    let mut s = prelude(&format!("decode {variant:?}"), variant.dtype, variant.path, target, &consts);
    let load = match variant.load {
        Load::Vec8 => DECODE_LOAD_VEC8,
        Load::Vec4 => DECODE_LOAD_VEC,
        Load::Scalar => DECODE_LOAD_SCALAR,
    };
    let reduce = if variant.path == Path::Subgroup { DECODE_SUBGROUP } else { DECODE_SHARED };
    for part in [DECODE, STICK, load, reduce] {
        s.push_str(part);
        s.push('\n');
    }
    s
}

/// Complete WGSL of the decode merge kernel (`decode_merge.wgsl`) for `dtype`.
pub fn decode_merge_source(dtype: Dtype, target: Target) -> String {
    prelude(&format!("decode merge {dtype:?}"), dtype, Path::SharedMemory, target, &[]) + DECODE_MERGE + STICK
}

/// Complete WGSL of the KV-cache append kernels (`kv_append.wgsl`: entry points `append` and
/// `advance`) for `dtype`.
pub fn kv_append_source(dtype: Dtype, target: Target) -> String {
    prelude(&format!("kv append {dtype:?}"), dtype, Path::SharedMemory, target, &[]) + KV_APPEND
}

/// `(name, WGSL)` of every kernel variant the crate can build for `target`, for offline
/// validation and translation (tests/shaders.rs). Each op adds its own variants here.
pub fn all_sources(target: Target) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = crate::config::all_variants()
        .iter()
        .map(|v| (format!("forward {v:?}"), forward_source(v, target)))
        .chain(crate::decode::all_sources(target))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}
