//! Compiling kernels once: the pipeline cache every op shares, with its runtime-check policy.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use crate::{Error, Result};

/// Which of wgpu's runtime checks the kernels are compiled with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShaderChecks {
    /// Everything wgpu offers: index clamping and loop bounding.
    Full,
    /// Index clamping, no loop bounding (the default): every loop of the kernels has a trip
    /// count bounded by the validated call, and loop bounding measurably slows their inner
    /// loops on real GPUs (see BENCHMARKS.md).
    Bounds,
    /// Nothing (see [`Attention::without_runtime_checks`](crate::Attention::without_runtime_checks)).
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
            ShaderChecks::Bounds => unsafe {
                let checks = wgpu::ShaderRuntimeChecks { force_loop_bounding: false, ..wgpu::ShaderRuntimeChecks::checked() };
                device.create_shader_module_trusted(desc, checks)
            },
            // SAFETY: the caller keeps every index in range.
            ShaderChecks::Off => unsafe { device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked()) },
        }
    }
}

/// How to build the pipeline of one cache key.
pub(crate) struct PipelineSpec<'a> {
    pub label: &'static str,
    pub source: String,
    pub layout: &'a wgpu::PipelineLayout,
    pub entry: &'static str,
    /// Values of the kernel's overridable constants.
    pub constants: Vec<(&'static str, f64)>,
    /// wgpu's zero fill of workgroup memory (off only for kernels that write it before reading).
    pub zero_workgroup_memory: bool,
}

/// Compute pipelines compiled on first use per key `K` and kept, under one [`ShaderChecks`]
/// policy. Shared by the forward and decode ops.
pub(crate) struct Pipelines<K> {
    device: wgpu::Device,
    checks: ShaderChecks,
    cache: Mutex<HashMap<K, Arc<wgpu::ComputePipeline>>>,
}

impl<K: Copy + Eq + Hash> Pipelines<K> {
    /// An empty cache with the default policy ([`ShaderChecks::Bounds`]).
    pub fn new(device: &wgpu::Device) -> Self {
        Pipelines { device: device.clone(), checks: ShaderChecks::Bounds, cache: Mutex::new(HashMap::new()) }
    }

    /// The policy pipelines are compiled with.
    pub fn checks(&self) -> ShaderChecks {
        self.checks
    }

    /// Compiles from now on with `checks`, dropping what was compiled before.
    ///
    /// # Safety
    /// As [`ShaderChecks::create_module`] for every kernel this cache compiles.
    pub unsafe fn set_checks(&mut self, checks: ShaderChecks) {
        self.checks = checks;
        self.cache = Mutex::new(HashMap::new());
    }

    /// The pipeline of `key`, built from `spec()` the first time.
    ///
    /// # Errors
    /// [`Error::Device`] if the device rejects the shader (a bug: every variant is validated
    /// by naga in the tests).
    pub fn get<'a>(&self, key: K, spec: impl FnOnce() -> PipelineSpec<'a>) -> Result<Arc<wgpu::ComputePipeline>> {
        let mut cache = self.cache.lock().map_err(|_| Error::Device("pipeline cache poisoned".into()))?;
        if let Some(p) = cache.get(&key) {
            return Ok(p.clone());
        }
        let spec = spec();
        let scope = error_scope(&self.device);
        let desc = wgpu::ShaderModuleDescriptor { label: Some(spec.label), source: wgpu::ShaderSource::Wgsl(spec.source.into()) };
        // SAFETY: every loop of the crate's kernels ends: their trip counts are bounded by the
        // validated call (tiles of T, head-dim chunks, lanes, chunk and slot lengths, splits,
        // tokens); `Off` only after the caller opted in (`without_runtime_checks`).
        let module = unsafe { self.checks.create_module(&self.device, desc) };
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(spec.label),
            layout: Some(spec.layout),
            module: &module,
            entry_point: Some(spec.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &spec.constants,
                zero_initialize_workgroup_memory: spec.zero_workgroup_memory,
            },
            cache: None,
        });
        scope.finish()?;
        let p = Arc::new(pipeline);
        cache.insert(key, p.clone());
        Ok(p)
    }
}

/// Captures validation errors of pipeline creation as [`Error::Device`] on native targets
/// (where popping the scope is immediate); on the web they reach the console.
struct Scope(#[allow(dead_code)] Option<wgpu::ErrorScopeGuard>);

fn error_scope(device: &wgpu::Device) -> Scope {
    if cfg!(target_arch = "wasm32") {
        Scope(None)
    } else {
        Scope(Some(device.push_error_scope(wgpu::ErrorFilter::Validation)))
    }
}

impl Scope {
    fn finish(self) -> Result<()> {
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(e) = self.0.and_then(|guard| pollster::block_on(guard.pop())) {
            return Err(Error::Device(e.to_string()));
        }
        Ok(())
    }
}
