//! Compiling ahead of the first call: the persistent pipeline cache (wgpu's
//! [`wgpu::PipelineCache`], where the device has `Features::PIPELINE_CACHE`) and
//! [`Attention::warm_up`].
//!
//! The library never reads or writes a file or an environment variable for this by itself:
//! the caller hands it saved data ([`Attention::with_pipeline_cache`]) or a path
//! ([`Attention::with_pipeline_cache_file`]), and saves the data when it wants
//! ([`Attention::pipeline_cache_data`], [`Attention::save_pipeline_cache`]). The `sbattn`
//! command keeps it under the user's cache directory (cli/README.md).
//!
//! What it saves depends on the driver: Vulkan drivers that compile at pipeline creation
//! (NVIDIA, AMD, Intel) keep their machine code in it; Mesa's lavapipe compiles a kernel's LLVM
//! code at its first dispatch, keeps only its intermediate form in the pipeline cache, and has
//! its own on-disk cache for the machine code (`MESA_SHADER_CACHE_*`); BENCHMARKS.md has the
//! measured first-call times.

use crate::kernel::persist::{self, PipelineCacheStatus};
use crate::kernel::pipelines::Persistent;
use crate::kernel::source::Recipe;
use crate::ops::{backward, cache, decode, weights};
use crate::{Attention, BackwardVariant, DecodeVariant, Dtype, ForwardVariant, Result};

/// A kernel to compile ahead of its first call ([`Attention::warm_up`]): each names the
/// pipelines one op records.
///
/// ```no_run
/// # fn main() -> sbattn::Result<()> {
/// use sbattn::{Attention, Dtype, Kernel, KernelPath};
/// let attn = Attention::with_default_adapter_blocking()?;
/// let forward = attn.forward_variant(Dtype::F16, 64, KernelPath::Auto)?;
/// attn.warm_up(&[Kernel::Forward(forward), Kernel::Append(Dtype::F16)])?;
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Kernel {
    /// The forward kernel of this variant ([`Attention::forward_variant`]).
    Forward(ForwardVariant),
    /// A decode step's partial kernel of this variant and the merge of its dtype (the variant
    /// of [`Attention::decode_plan`]).
    Decode(DecodeVariant),
    /// The four kernels of a backward call of this variant: preparation, dq, dk/dv and the
    /// bias gradient ([`Attention::backward_variant`]).
    Backward(BackwardVariant),
    /// The two KV-cache append kernels of this dtype ([`Attention::append`]).
    Append(Dtype),
    /// The weights kernel of this dtype ([`Attention::weights`]).
    Weights(Dtype),
}

impl From<ForwardVariant> for Kernel {
    fn from(v: ForwardVariant) -> Self {
        Kernel::Forward(v)
    }
}

impl From<DecodeVariant> for Kernel {
    fn from(v: DecodeVariant) -> Self {
        Kernel::Decode(v)
    }
}

impl From<BackwardVariant> for Kernel {
    fn from(v: BackwardVariant) -> Self {
        Kernel::Backward(v)
    }
}

impl Kernel {
    /// The recipes of its pipelines.
    fn recipes(&self) -> Vec<Recipe> {
        match *self {
            Kernel::Forward(v) => vec![v.recipe()],
            Kernel::Decode(v) => vec![v.recipe(), decode::plan::merge_recipe(v.dtype)],
            Kernel::Backward(v) => vec![
                backward::plan::prep_recipe(v.dtype),
                v.dq_recipe(),
                v.dkv_recipe(),
                backward::plan::dbias_recipe(),
            ],
            Kernel::Append(dtype) => vec![cache::recipe(dtype, "append"), cache::recipe(dtype, "advance")],
            Kernel::Weights(dtype) => vec![weights::plan::recipe(dtype)],
        }
    }
}

impl Attention {
    /// The same context, creating every pipeline it compiles from now on through a wgpu
    /// [`wgpu::PipelineCache`] started from `data` (what [`Attention::pipeline_cache_data`]
    /// returned in an earlier run; `None`: start empty). Data made by another adapter, driver,
    /// backend or sbattn version, or damaged, is not used: the cache starts empty and
    /// [`Attention::pipeline_cache_status`] says why. On a device without
    /// `Features::PIPELINE_CACHE` (every backend but Vulkan, or a device created without it)
    /// nothing changes.
    ///
    /// Call it last when building the context: [`Attention::with_full_runtime_checks`],
    /// [`Attention::with_index_clamping`] and [`Attention::without_runtime_checks`] start a new
    /// set of pipelines without it. Pipelines compiled before are kept as they are.
    pub fn with_pipeline_cache(self, data: Option<&[u8]>) -> Self {
        self.start_pipeline_cache(data, None);
        self
    }

    /// [`Attention::with_pipeline_cache`] with the data of the file at `path`: a missing file
    /// starts an empty cache, an unreadable one too (the status says why). The library reads
    /// that file only; save with [`Attention::save_pipeline_cache`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn with_pipeline_cache_file(self, path: impl AsRef<std::path::Path>) -> Self {
        let path = path.as_ref();
        match std::fs::read(path) {
            Ok(data) => self.start_pipeline_cache(Some(&data), None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.start_pipeline_cache(None, None),
            Err(e) => self.start_pipeline_cache(None, Some(format!("reading {}: {e}", path.display()))),
        }
        self
    }

    fn start_pipeline_cache(&self, data: Option<&[u8]>, unreadable: Option<String>) {
        let pipelines = self.pipelines();
        if !self.capabilities().features.contains(wgpu::Features::PIPELINE_CACHE) {
            pipelines.set_persistent(Persistent { cache: None, status: PipelineCacheStatus::Unsupported });
            return;
        }
        let info = self.device().adapter_info();
        let (payload, status) = match (data, unreadable) {
            (_, Some(why)) => (None, PipelineCacheStatus::Rejected(why)),
            (None, None) => (None, PipelineCacheStatus::Empty),
            (Some(d), None) => match persist::unframe(&info, d) {
                Ok(p) => (Some(p), PipelineCacheStatus::Loaded { bytes: d.len() }),
                Err(why) => (None, PipelineCacheStatus::Rejected(why)),
            },
        };
        let create = |payload: Option<&[u8]>| {
            self.guarded(|| {
                // SAFETY: `payload` is what `PipelineCache::get_data` returned on a device of
                // this adapter, driver, backend and sbattn version (the frame's key), intact
                // (its length and checksum); wgpu checks its own header again, and with
                // `fallback` an unusable payload gives an empty cache.
                Ok(unsafe {
                    self.device().create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
                        label: Some("sbattn"),
                        data: payload,
                        fallback: true,
                    })
                })
            })
        };
        let persistent = match create(payload) {
            Ok(cache) => Persistent { cache: Some(cache), status },
            Err(e) if payload.is_some() => match create(None) {
                Ok(cache) => Persistent { cache: Some(cache), status: PipelineCacheStatus::Rejected(format!("wgpu refused it: {e}")) },
                Err(e) => Persistent { cache: None, status: PipelineCacheStatus::Rejected(format!("no cache could be made: {e}")) },
            },
            Err(e) => Persistent { cache: None, status: PipelineCacheStatus::Rejected(format!("no cache could be made: {e}")) },
        };
        pipelines.set_persistent(persistent);
    }

    /// What the persistent pipeline cache is: off, unsupported, or started empty, from saved
    /// data, or empty after refusing saved data (and why).
    pub fn pipeline_cache_status(&self) -> PipelineCacheStatus {
        self.pipelines().persistent_status()
    }

    /// The persistent pipeline cache's data, every pipeline created through it so far included,
    /// to hand to [`Attention::with_pipeline_cache`] in a later run; `None` without a cache or
    /// when the driver has nothing to save.
    pub fn pipeline_cache_data(&self) -> Option<Vec<u8>> {
        let data = self.pipelines().persistent_cache()?.get_data()?;
        Some(persist::frame(&self.device().adapter_info(), &data))
    }

    /// A file name for this device's pipeline cache data, unique to its adapter, driver, backend
    /// and the sbattn version (`sbattn-0.1.0-vulkan-llvmpipe_llvm_15_0_6_256_bits-<hash>`);
    /// `None` on a device without `Features::PIPELINE_CACHE`.
    pub fn pipeline_cache_key(&self) -> Option<String> {
        self.capabilities()
            .features
            .contains(wgpu::Features::PIPELINE_CACHE)
            .then(|| persist::file_key(&self.device().adapter_info()))
    }

    /// Writes [`Attention::pipeline_cache_data`] to `path` (its folder created if missing),
    /// through a temporary file renamed over it, so that a reader never sees half a file.
    /// Returns whether anything was written (nothing without a cache or data).
    ///
    /// # Errors
    /// The file system's.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn save_pipeline_cache(&self, path: impl AsRef<std::path::Path>) -> std::io::Result<bool> {
        let path = path.as_ref();
        let Some(data) = self.pipeline_cache_data() else {
            return Ok(false);
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".{}.tmp", std::process::id()));
        let tmp = std::path::PathBuf::from(tmp);
        let written = std::fs::write(&tmp, &data).and_then(|_| std::fs::rename(&tmp, path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map(|_| true)
    }

    /// Compiles the pipelines of `kernels` now instead of at their first call, on several
    /// threads at once natively (one per pipeline, at most the machine's cores; wgpu and the
    /// driver compile pipelines of one device concurrently where they can), one after another
    /// on the web. Pipelines compiled before are skipped. Returns how many it compiled.
    ///
    /// This is pipeline creation: drivers that compile at the first dispatch instead (Mesa's
    /// lavapipe) still do that work at the first call.
    ///
    /// # Errors
    /// [`crate::Error::Device`] when the device rejects a pipeline (a variant forced past
    /// what the device offers: take variants from [`Attention::forward_variant`] and its
    /// siblings), [`crate::Error::DeviceLost`].
    pub fn warm_up(&self, kernels: &[Kernel]) -> Result<usize> {
        self.check_alive()?;
        let mut recipes: Vec<Recipe> = Vec::new();
        for r in kernels.iter().flat_map(Kernel::recipes) {
            if !recipes.contains(&r) {
                recipes.push(r);
            }
        }
        let before = self.compiled_kernels();
        let compile = |r: &Recipe| self.guarded(|| self.kernel(r).map(|_| ()));
        #[cfg(not(target_arch = "wasm32"))]
        {
            use std::sync::atomic::{AtomicUsize, Ordering};
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(recipes.len());
            let next = AtomicUsize::new(0);
            let work = || -> Result<()> {
                while let Some(r) = recipes.get(next.fetch_add(1, Ordering::Relaxed)) {
                    compile(r)?;
                }
                Ok(())
            };
            std::thread::scope(|s| {
                let handles: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
                let mine = work();
                handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).fold(mine, Result::and)
            })?;
        }
        #[cfg(target_arch = "wasm32")]
        for r in &recipes {
            compile(r)?;
        }
        Ok(self.compiled_kernels().saturating_sub(before))
    }
}
