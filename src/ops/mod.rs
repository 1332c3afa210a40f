//! The ops, one folder each: a call struct, its validation and recording (`mod.rs`), its
//! variant and tile choice (`plan.rs`) and its kernel parameters (`params.rs`). Ops build on the
//! kernel layer (`crate::kernel`), never the reverse; this module is the registry of every
//! kernel variant they can build.

pub mod backward;
pub mod cache;
pub(crate) mod common;
pub mod decode;
pub mod forward;
pub mod weights;

use crate::kernel::source::{Recipe, Target};
use crate::kernel::uniform::Params;

/// One kernel variant's source, for offline validation.
#[derive(Clone, Debug)]
pub struct KernelSource {
    /// A unique name: the kernel, its storage type, constants, overrides and entry point.
    pub name: String,
    /// The complete WGSL.
    pub wgsl: String,
    /// Values of its `override` constants, as the pipeline sets them.
    pub overrides: Vec<(String, f64)>,
    /// Its entry point.
    pub entry: String,
}

/// Every kernel variant the crate can build for `target`, for offline validation and
/// translation (tests/shaders.rs). A new op adds its variants here.
pub fn all_sources(target: Target) -> Vec<KernelSource> {
    let mut out: Vec<KernelSource> = all_recipes()
        .into_iter()
        .map(|r| KernelSource {
            name: format!("{} {:?} {:?} {:?} {}", r.name, r.dtype, r.consts, r.overrides, r.entry),
            wgsl: r.source(target),
            overrides: r.override_values().into_iter().map(|(n, v)| (n.to_string(), v)).collect(),
            entry: r.entry.to_string(),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.dedup_by(|a, b| a.name == b.name);
    out
}

fn all_recipes() -> Vec<Recipe> {
    let mut out: Vec<Recipe> = forward::plan::all_variants().iter().map(|v| v.recipe()).collect();
    let decode = decode::plan::all_variants();
    out.extend(decode.iter().map(|v| v.recipe()));
    // Keys per step is an override: every value on one variant of each dtype, path and load.
    for v in decode.iter().filter(|v| v.lanes == 16 && v.rows == 4 && v.cols == v.load.vec4s()) {
        for keys_per_step in [2, 4, 8] {
            out.push(decode::plan::DecodeVariant { keys_per_step, ..*v }.recipe());
        }
    }
    for dtype in [crate::Dtype::F32, crate::Dtype::F16] {
        out.push(decode::plan::merge_recipe(dtype));
    }
    out.extend(cache::all_recipes());
    // Paging is the `PAGED` override: the paged form of every kernel that reads or writes a
    // cache (forward variants, decode variants with one key per step, merges, appends).
    let paged: Vec<Recipe> = out
        .iter()
        .filter(|r| r.overrides.contains(&("PAGED", 0)))
        .filter(|r| r.overrides.len() == 1 || r.overrides.contains(&("U", 1)))
        .map(|r| r.clone().with_paging(true))
        .collect();
    out.extend(paged);
    out.extend(backward::plan::all_recipes());
    out.extend(weights::plan::all_recipes());
    out
}

/// One kernel's parameter struct: the kernel's WGSL, the Rust struct's size and its
/// `(field, byte offset)` list.
pub type ParamLayout = (String, String, usize, Vec<(&'static str, usize)>);

/// The parameter struct of each kernel, for the test that compares it with naga's layout of the
/// WGSL `Params` (and `Addr`).
pub fn param_layouts(target: Target) -> Vec<ParamLayout> {
    fn entry<P: Params>(name: &str, recipe: Recipe, target: Target) -> ParamLayout {
        (name.to_string(), recipe.source(target), std::mem::size_of::<P>(), P::fields())
    }
    let forward = forward::plan::all_variants()[0].recipe();
    let decode = decode::plan::all_variants()[0].recipe();
    vec![
        entry::<forward::params::ForwardParams>("forward", forward, target),
        entry::<decode::params::DecodeParams>("decode partial", decode, target),
        entry::<decode::params::MergeParams>("decode merge", decode::plan::merge_recipe(crate::Dtype::F32), target),
        entry::<cache::params::AppendParams>("cache append", cache::all_recipes().remove(0), target),
        entry::<backward::params::BackwardParams>("backward dq", backward::plan::all_variants()[0].dq_recipe(), target),
        entry::<backward::params::BackwardParams>("backward dkv", backward::plan::all_variants()[0].dkv_recipe(), target),
        entry::<backward::params::BackwardParams>("backward prep", backward::plan::prep_recipe(crate::Dtype::F32), target),
        entry::<backward::params::BackwardParams>("backward dbias", backward::plan::dbias_recipe(), target),
        entry::<weights::params::WeightsParams>("weights", weights::plan::recipe(crate::Dtype::F32), target),
    ]
}

/// Field names of the WGSL `Addr` struct, in order, as the Rust `Addr` declares them.
pub fn addr_fields() -> [&'static str; 4] {
    crate::kernel::uniform::ADDR_FIELDS
}

/// Field names of the WGSL `Pages` struct (KV cache paging), in order, as the Rust `Pages`
/// declares them.
pub fn pages_fields() -> [&'static str; 4] {
    crate::kernel::uniform::PAGES_FIELDS
}
