//! Compiling kernels once: the pipeline cache every op shares, keyed by [`Recipe`], with its
//! runtime-check policy, and optionally wgpu's persistent [`wgpu::PipelineCache`] that every
//! pipeline is created through (`crate::warm`, `kernel::persist`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use crate::kernel::layout::KernelLayout;
use crate::kernel::source::{Recipe, Target};
use crate::tensor::Access;
use crate::{Error, Result};

/// Which of wgpu's runtime checks the kernels are compiled with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShaderChecks {
    /// Everything wgpu offers: index clamping and loop bounding.
    Full,
    /// Index clamping in every kernel, no loop bounding: every loop of the kernels has a trip
    /// count bounded by the validated call, and loop bounding measurably slows their inner
    /// loops on real GPUs (BENCHMARKS.md).
    Bounds,
    /// The default: as [`ShaderChecks::Bounds`], except that kernels whose every index is in
    /// range by construction (the tensor-core forward kernel, the decode and KV-cache kernels:
    /// their workgroup-memory indices derive from invocation ids and constants only, their
    /// buffer indices from parameters the host validated and lengths they clamp themselves)
    /// compile without runtime checks, where clamping measurably slowed them
    /// (docs/PERFORMANCE.md).
    Trusted,
    /// Nothing, in any kernel (see [`crate::Attention::without_runtime_checks`]).
    Off,
}

impl ShaderChecks {
    /// Compiles `desc` with these checks.
    ///
    /// # Safety
    /// Below `Full`: every loop of the kernel must end (wgpu's loop bounding is off). `Off`:
    /// also no index of the kernel may leave its binding or array, whatever the call.
    unsafe fn create_module(self, device: &wgpu::Device, desc: wgpu::ShaderModuleDescriptor<'_>) -> wgpu::ShaderModule {
        match self {
            ShaderChecks::Full => device.create_shader_module(desc),
            // SAFETY: the caller's loops end; index clamping stays on.
            ShaderChecks::Bounds | ShaderChecks::Trusted => unsafe {
                let checks = wgpu::ShaderRuntimeChecks { force_loop_bounding: false, ..wgpu::ShaderRuntimeChecks::checked() };
                device.create_shader_module_trusted(desc, checks)
            },
            // SAFETY: the caller keeps every index in range.
            ShaderChecks::Off => unsafe { device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked()) },
        }
    }
}

/// A compiled kernel and the layout its bind groups are made for.
pub(crate) struct Compiled {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: Arc<KernelLayout>,
}

type Slot = Arc<OnceLock<Result<Arc<Compiled>>>>;

/// Compute pipelines compiled on first use per [`Recipe`] and kept, under one
/// [`ShaderChecks`] policy. The map's lock is held only to find or insert a recipe's slot,
/// never while compiling: threads that want different kernels compile them at once, threads
/// that want the same one wait for the first.
pub(crate) struct Pipelines {
    device: wgpu::Device,
    checks: ShaderChecks,
    cache: Mutex<HashMap<Recipe, Slot>>,
    layouts: Mutex<HashMap<&'static [Access], Arc<KernelLayout>>>,
    compiled: AtomicUsize,
    /// The driver-level cache pipelines are created through, and what it was started from.
    persistent: RwLock<Persistent>,
}

/// The persistent pipeline cache of a [`Pipelines`]: wgpu's handle (`None`: pipelines are
/// created without one) and what became of the data it was started from.
pub(crate) struct Persistent {
    pub cache: Option<wgpu::PipelineCache>,
    pub status: super::persist::PipelineCacheStatus,
}

impl Pipelines {
    /// An empty cache with `checks`.
    pub fn new(device: &wgpu::Device, checks: ShaderChecks) -> Self {
        Pipelines {
            device: device.clone(),
            checks,
            cache: Mutex::new(HashMap::new()),
            layouts: Mutex::new(HashMap::new()),
            compiled: AtomicUsize::new(0),
            persistent: RwLock::new(Persistent { cache: None, status: super::persist::PipelineCacheStatus::Off }),
        }
    }

    /// Creates every later pipeline through `persistent.cache` (pipelines compiled before
    /// stay as they are).
    pub fn set_persistent(&self, persistent: Persistent) {
        *self.persistent.write().unwrap_or_else(|e| e.into_inner()) = persistent;
    }

    /// The persistent cache's handle, if there is one.
    pub fn persistent_cache(&self) -> Option<wgpu::PipelineCache> {
        self.persistent.read().unwrap_or_else(|e| e.into_inner()).cache.clone()
    }

    /// What the persistent cache was started from.
    pub fn persistent_status(&self) -> super::persist::PipelineCacheStatus {
        self.persistent.read().unwrap_or_else(|e| e.into_inner()).status.clone()
    }

    /// The policy pipelines are compiled with.
    pub fn checks(&self) -> ShaderChecks {
        self.checks
    }

    /// Pipelines compiled so far.
    pub fn compiled(&self) -> usize {
        self.compiled.load(Ordering::Relaxed)
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        // A panic while holding these locks cannot leave them inconsistent (inserts only).
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The layout of a kernel with `bindings`.
    pub fn layout(&self, bindings: &'static [Access]) -> Arc<KernelLayout> {
        Self::lock(&self.layouts)
            .entry(bindings)
            .or_insert_with(|| Arc::new(KernelLayout::new(&self.device, "sbattn", bindings)))
            .clone()
    }

    /// The pipeline of `recipe`, compiled the first time.
    ///
    /// # Errors
    /// [`Error::Device`] if the device rejects the shader (a bug: every variant is validated
    /// by naga in the tests).
    pub fn get(&self, recipe: &Recipe) -> Result<Arc<Compiled>> {
        let slot = {
            let mut cache = Self::lock(&self.cache);
            match cache.get(recipe) {
                Some(s) => s.clone(),
                None => cache.entry(recipe.clone()).or_default().clone(),
            }
        };
        slot.get_or_init(|| self.compile(recipe)).clone()
    }

    fn compile(&self, recipe: &Recipe) -> Result<Arc<Compiled>> {
        let layout = self.layout(recipe.bindings);
        let scope = ErrorScope::push(&self.device);
        let source = recipe.source(Target::current());
        let desc = wgpu::ShaderModuleDescriptor { label: Some(recipe.name), source: wgpu::ShaderSource::Wgsl(source.into()) };
        let checks = match self.checks {
            ShaderChecks::Trusted if recipe.trusted => ShaderChecks::Off,
            c => c,
        };
        // SAFETY: every loop of the crate's kernels ends: their trip counts are bounded by the
        // validated call (tiles of T, head-dim chunks, lanes, chunk and slot lengths, splits,
        // tokens); no checks at all only for kernels whose indices are in range by construction
        // (`Recipe::trusted`, reviewed per kernel) or after the caller opted in
        // (`without_runtime_checks`).
        let module = unsafe { checks.create_module(&self.device, desc) };
        let constants = recipe.override_values();
        let persistent = self.persistent_cache();
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(recipe.name),
            layout: Some(&layout.pipeline),
            module: &module,
            entry_point: Some(recipe.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &constants,
                zero_initialize_workgroup_memory: recipe.zero_workgroup_memory,
            },
            cache: persistent.as_ref(),
        });
        scope.pop(recipe.name)?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        Ok(Arc::new(Compiled { pipeline, layout }))
    }
}

/// Captures validation errors of pipeline creation as [`Error::Device`] on native targets
/// (where popping the scope is immediate); on the web they reach the console.
struct ErrorScope(#[allow(dead_code)] Option<wgpu::ErrorScopeGuard>);

impl ErrorScope {
    fn push(device: &wgpu::Device) -> Self {
        if cfg!(target_arch = "wasm32") {
            ErrorScope(None)
        } else {
            ErrorScope(Some(device.push_error_scope(wgpu::ErrorFilter::Validation)))
        }
    }

    fn pop(self, what: &str) -> Result<()> {
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(e) = self.0.and_then(|guard| pollster::block_on(guard.pop())) {
            return Err(Error::device(format!("{what}: {e}")));
        }
        let _ = what;
        Ok(())
    }
}
