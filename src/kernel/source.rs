//! The recipe of one kernel variant, and its WGSL: a short generated prelude, then `.wgsl` files
//! kept as they are in `shaders/`. Knows nothing of any op: each op states its recipes.

use std::hash::{Hash, Hasher};

use crate::kernel::consts;
use crate::tensor::Access;
use crate::Dtype;

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

/// One WGSL file of `shaders/`, compared and hashed by identity (each file is one static
/// string), so that a recipe is a cheap cache key.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Part(pub &'static str);

impl PartialEq for Part {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}
impl Eq for Part {}
impl Hash for Part {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.0.as_ptr() as usize, self.0.len()).hash(state);
    }
}

/// WGSL extensions a kernel uses beyond its storage type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct Extensions {
    /// Subgroup operations (browsers need `enable subgroups;`).
    pub subgroups: bool,
    /// wgpu's cooperative matrices.
    pub cooperative_matrix: bool,
}

/// Everything that makes one compiled kernel: the pipeline cache's key. Equal recipes give the
/// same pipeline; the op that writes a recipe also derives its dispatch from the same data, so
/// the two always agree.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Recipe {
    /// What it is, for labels and errors (e.g. `forward/portable`).
    pub name: &'static str,
    /// Storage type (`alias ST`).
    pub dtype: Dtype,
    /// The WGSL files, in order, after the prelude.
    pub parts: Vec<Part>,
    /// `const NAME: u32` declarations of the prelude (tile sizes).
    pub consts: Vec<(&'static str, u32)>,
    /// Values of `override` constants, set when the pipeline is built (one module serves all).
    pub overrides: Vec<(&'static str, u32)>,
    /// Entry point.
    pub entry: &'static str,
    /// The kernel's storage bindings 1.., in order (binding 0 is its uniform parameters).
    pub bindings: &'static [Access],
    /// Extensions the kernel uses.
    pub extensions: Extensions,
    /// wgpu's zero fill of workgroup memory (off only for kernels that write it before reading).
    pub zero_workgroup_memory: bool,
    /// Every index of the kernel is in range by construction (workgroup-memory indices from
    /// invocation ids and constants, buffer indices from validated parameters and clamped
    /// lengths): [`crate::ShaderChecks::Trusted`] compiles it without runtime checks.
    pub trusted: bool,
}

impl Recipe {
    /// The kernel's complete WGSL for `target`.
    pub fn source(&self, target: Target) -> String {
        let mut s = String::new();
        if self.dtype == Dtype::F16 || self.extensions.cooperative_matrix {
            s.push_str("enable f16;\n");
        }
        if self.extensions.subgroups && target == Target::Web {
            s.push_str("enable subgroups;\n");
        }
        if self.extensions.cooperative_matrix {
            s.push_str("enable wgpu_cooperative_matrix;\n");
        }
        s.push_str(&format!("// kernel: {} {:?} {:?}\n", self.name, self.dtype, self.consts));
        s.push_str(&format!("alias ST = {};\n", self.dtype.wgsl()));
        for (name, value) in consts::WGSL.iter().chain(&self.consts) {
            s.push_str(&format!("const {name}: u32 = {value}u;\n"));
        }
        for part in &self.parts {
            s.push('\n');
            s.push_str(part.0);
        }
        s
    }

    /// The kernel for a paged KV cache (`paged`) or a contiguous one: the `PAGED` override of
    /// common/pages.wgsl, which every recipe including that file sets (0 unless a call is
    /// paged), so that contiguous calls run without the block table's code.
    pub(crate) fn with_paging(mut self, paged: bool) -> Recipe {
        self.overrides.retain(|(n, _)| *n != "PAGED");
        self.overrides.push(("PAGED", paged as u32));
        self
    }

    /// The override constants as wgpu takes them.
    pub fn override_values(&self) -> Vec<(&'static str, f64)> {
        self.overrides.iter().map(|(n, v)| (*n, *v as f64)).collect()
    }
}

/// The WGSL files of `shaders/`, by path.
pub(crate) mod files {
    macro_rules! wgsl {
        ($($name:ident = $path:literal;)*) => {$(
            pub(crate) const $name: &str = include_str!(concat!("../../shaders/", $path));
        )*};
    }
    wgsl! {
        ADDR = "common/addr.wgsl";
        PAGES = "common/pages.wgsl";
        STICK = "common/stick.wgsl";
        SCAN_SUBGROUP = "common/scan_subgroup.wgsl";
        FORWARD_IO = "forward/io.wgsl";
        FORWARD_PORTABLE = "forward/portable.wgsl";
        FORWARD_SCAN_SHARED = "forward/scan_shared.wgsl";
        FORWARD_COOP = "forward/coop.wgsl";
        FORWARD_COOP_MAT = "forward/coop_mat.wgsl";
        FORWARD_COOP_EMU = "forward/coop_emu.wgsl";
        DECODE_PARTIAL = "decode/partial.wgsl";
        DECODE_LOAD_VEC8 = "decode/load_vec8.wgsl";
        DECODE_LOAD_VEC4 = "decode/load_vec4.wgsl";
        DECODE_LOAD_SCALAR = "decode/load_scalar.wgsl";
        DECODE_REDUCE_SUBGROUP = "decode/reduce_subgroup.wgsl";
        DECODE_REDUCE_SHARED = "decode/reduce_shared.wgsl";
        DECODE_MERGE = "decode/merge.wgsl";
        CACHE_APPEND = "cache/append.wgsl";
        BACKWARD_IO = "backward/io.wgsl";
        BACKWARD_PREP = "backward/prep.wgsl";
        BACKWARD_TILE = "backward/tile.wgsl";
        BACKWARD_DQ = "backward/dq.wgsl";
        BACKWARD_DKV = "backward/dkv.wgsl";
        BACKWARD_SCAN_SHARED = "backward/scan_shared.wgsl";
        BACKWARD_DBIAS = "backward/dbias.wgsl";
        WEIGHTS = "weights/weights.wgsl";
    }
}
