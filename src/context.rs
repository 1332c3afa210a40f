//! [`Attention`]: one device's context for every op: the device and queue, what they offer,
//! one pipeline cache, the parameter arena, scratch and the unused bindings.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::caps::Capabilities;
use crate::kernel::layout::{ParamSlot, Unused};
use crate::kernel::pipelines::{Compiled, Pipelines, ShaderChecks};
use crate::kernel::source::Recipe;
use crate::kernel::uniform::{Arena, Params};
use crate::{Error, Result};

/// Stick-breaking attention on one wgpu device: its capabilities, the kernels compiled so far,
/// and the calls that record work into the caller's encoders ([`Attention::forward`],
/// [`Attention::append`], [`Attention::decode`]).
///
/// Cheap to share across threads (`&self` everywhere, `Send + Sync`); every kernel variant is
/// compiled once, on first use, and kept.
///
/// It sets the device's lost callback (wgpu keeps one per device), so that once the device is
/// lost or destroyed every call returns [`Error::DeviceLost`] instead of touching it; see
/// [`Attention::is_lost`].
pub struct Attention {
    device: wgpu::Device,
    queue: wgpu::Queue,
    caps: Capabilities,
    pipelines: Pipelines,
    params: Arena,
    tables: Arena,
    unused: Unused,
    scratch: Mutex<HashMap<&'static str, wgpu::Buffer>>,
    lost: Arc<Lost>,
}

/// Set by the device's lost callback.
#[derive(Default)]
struct Lost {
    flag: AtomicBool,
    why: Mutex<String>,
}

/// What to ask of an adapter when making a device for sbattn ([`Attention::device_descriptor`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeviceOptions {
    /// Opt into wgpu's experimental cooperative matrices where the adapter has them, for the
    /// tensor-core path. Off by default: it sets `DeviceDescriptor::experimental_features`.
    pub cooperative_matrix: bool,
}

impl DeviceOptions {
    /// Everything that makes sbattn faster where the adapter offers it, experimental
    /// cooperative matrices included (what [`Attention::with_default_adapter`] asks for).
    pub fn fastest() -> Self {
        DeviceOptions { cooperative_matrix: true }
    }

    /// The same options with cooperative matrices allowed or not.
    pub fn with_cooperative_matrix(self, on: bool) -> Self {
        DeviceOptions { cooperative_matrix: on }
    }
}

impl Attention {
    /// Uses the caller's device and queue. Enable `SHADER_F16` for f16 and `SUBGROUP` for the
    /// subgroup paths when creating the device ([`Attention::device_descriptor`] lists them).
    /// Without the adapter the tensor-core path is never chosen (wgpu reports cooperative
    /// matrices on the adapter only): prefer [`Attention::from_adapter`].
    pub fn new(device: &wgpu::Device, queue: &wgpu::Queue) -> Self {
        Self::with_capabilities(device, queue, Capabilities::of(device, None), ShaderChecks::Trusted)
    }

    /// Uses the caller's device and queue, reading from `adapter` what wgpu reports only there
    /// (its cooperative-matrix configurations, which the tensor-core path needs).
    pub fn from_adapter(adapter: &wgpu::Adapter, device: &wgpu::Device, queue: &wgpu::Queue) -> Self {
        Self::with_capabilities(device, queue, Capabilities::of(device, Some(adapter)), ShaderChecks::Trusted)
    }

    fn with_capabilities(device: &wgpu::Device, queue: &wgpu::Queue, caps: Capabilities, checks: ShaderChecks) -> Self {
        let lost = Arc::new(Lost::default());
        let on_lost = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            *on_lost.why.lock().unwrap_or_else(|e| e.into_inner()) = format!("{reason:?} {message}").trim().to_string();
            on_lost.flag.store(true, Ordering::SeqCst);
        });
        Attention {
            lost,
            device: device.clone(),
            queue: queue.clone(),
            pipelines: Pipelines::new(device, checks),
            params: Arena::uniform(&caps.limits),
            tables: Arena::storage(&caps.limits),
            unused: Unused::new(device),
            scratch: Mutex::new(HashMap::new()),
            caps,
        }
    }

    /// The same context, compiling kernels with every wgpu runtime check, loop bounding
    /// included (the default is [`ShaderChecks::Trusted`]). Kernels compiled before are
    /// dropped.
    pub fn with_full_runtime_checks(self) -> Self {
        Self::with_capabilities(&self.device, &self.queue, self.caps, ShaderChecks::Full)
    }

    /// The same context, compiling every kernel with wgpu's index clamping (no loop bounding:
    /// [`ShaderChecks::Bounds`]), the trusted ones too. Kernels compiled before are dropped.
    pub fn with_index_clamping(self) -> Self {
        Self::with_capabilities(&self.device, &self.queue, self.caps, ShaderChecks::Bounds)
    }

    /// The same context, compiling kernels without wgpu's runtime checks (no index clamping,
    /// no loop bounding). Kernels compiled before are dropped.
    ///
    /// # Safety
    /// Sound only because every call is validated on the host (shapes, strides, offsets and
    /// buffer sizes, so that no global index can leave its binding), the kernels clamp the
    /// values they read from the GPU (cache lengths) to what the host validated, and every
    /// workgroup-memory index is in range by construction; the default keeps wgpu's index
    /// clamping as a second line of defence. The tests run both.
    pub unsafe fn without_runtime_checks(self) -> Self {
        Self::with_capabilities(&self.device, &self.queue, self.caps, ShaderChecks::Off)
    }

    /// The runtime checks kernels are compiled with.
    pub fn shader_checks(&self) -> ShaderChecks {
        self.pipelines.checks()
    }

    /// Features and limits to request from `adapter` for the fastest paths it has: f16,
    /// subgroups, timestamp queries and the pipeline cache where offered, cooperative matrices
    /// where offered and `options` allows them, and the adapter's own limits.
    pub fn device_descriptor(adapter: &wgpu::Adapter, options: &DeviceOptions) -> wgpu::DeviceDescriptor<'static> {
        let mut wanted = wgpu::Features::SHADER_F16
            | wgpu::Features::SUBGROUP
            | wgpu::Features::TIMESTAMP_QUERY
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
            | wgpu::Features::PIPELINE_CACHE;
        if options.cooperative_matrix {
            wanted |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
        }
        let required_features = adapter.features() & wanted;
        let experimental_features = if required_features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
            // SAFETY: the caller asked for cooperative matrices (`DeviceOptions`); the crate uses
            // them in one kernel whose matrix loads and stores stay inside workgroup arrays and
            // validated bindings.
            unsafe { wgpu::ExperimentalFeatures::enabled() }
        } else {
            wgpu::ExperimentalFeatures::disabled()
        };
        wgpu::DeviceDescriptor {
            label: Some("sbattn"),
            required_features,
            required_limits: adapter.limits(),
            experimental_features,
            ..Default::default()
        }
    }

    /// Picks the best adapter (discrete, then integrated, then others; Vulkan, Metal, DX12 and
    /// WebGPU before GL), honouring wgpu's `WGPU_BACKEND` and `WGPU_ADAPTER_NAME`, and makes a
    /// device with [`DeviceOptions::fastest`] (experimental cooperative matrices included where
    /// the adapter has them).
    ///
    /// # Errors
    /// [`Error::NoAdapter`] when none is found, [`Error::RequestDevice`] when it refuses.
    pub async fn with_default_adapter() -> Result<Self> {
        Self::with_default_adapter_options(&DeviceOptions::fastest()).await
    }

    /// [`Attention::with_default_adapter`] with the given device options.
    ///
    /// # Errors
    /// As [`Attention::with_default_adapter`].
    pub async fn with_default_adapter_options(options: &DeviceOptions) -> Result<Self> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = pick_adapter(&instance).await?;
        let (device, queue) = adapter
            .request_device(&Self::device_descriptor(&adapter, options))
            .await
            .map_err(|e| Error::RequestDevice(e.to_string()))?;
        Ok(Self::from_adapter(&adapter, &device, &queue))
    }

    /// Blocking [`Attention::with_default_adapter`] (native only).
    ///
    /// # Errors
    /// As [`Attention::with_default_adapter`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn with_default_adapter_blocking() -> Result<Self> {
        pollster::block_on(Self::with_default_adapter())
    }

    /// The device.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// What the device offers.
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// Kernel variants compiled so far (each is compiled once).
    pub fn compiled_kernels(&self) -> usize {
        self.pipelines.compiled()
    }

    /// Whether the device is lost (or destroyed): every call then returns
    /// [`Error::DeviceLost`]; make a new device and a new `Attention`.
    pub fn is_lost(&self) -> bool {
        // The lost callback runs while the device is polled.
        let _ = self.device.poll(wgpu::PollType::Poll);
        self.lost.flag.load(Ordering::SeqCst)
    }

    /// [`Error::DeviceLost`] once the device is lost.
    pub(crate) fn check_alive(&self) -> Result<()> {
        if self.is_lost() {
            let why = self.lost.why.lock().unwrap_or_else(|e| e.into_inner()).clone();
            return Err(Error::DeviceLost(why));
        }
        Ok(())
    }

    /// Runs `f`, which touches the device, with its errors captured: a lost device is
    /// [`Error::DeviceLost`], an allocation failure [`Error::OutOfMemory`], any other device
    /// error [`Error::Device`] with wgpu's error as its source (never the device's uncaptured
    /// error handler, whose default panics). On the web, where popping a scope takes a round
    /// trip to the browser, errors reach the console instead.
    pub(crate) fn guarded<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.check_alive()?;
        #[cfg(not(target_arch = "wasm32"))]
        {
            let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
            let memory = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
            let result = f();
            let (memory, validation) = (pollster::block_on(memory.pop()), pollster::block_on(validation.pop()));
            if let Some(e) = memory {
                return Err(Error::OutOfMemory(e.to_string()));
            }
            if let Some(e) = validation {
                self.check_alive()?;
                return Err(Error::Device { message: e.to_string(), source: Some(Arc::new(e)) });
            }
            result
        }
        #[cfg(target_arch = "wasm32")]
        f()
    }

    /// A new buffer of `size` bytes (rounded up to 4) with `usage`.
    ///
    /// # Errors
    /// [`Error::Limit`] past the device's `max_buffer_size`, [`Error::OutOfMemory`] when the
    /// device cannot allocate it, [`Error::DeviceLost`].
    pub fn create_buffer(&self, label: &str, size: u64, usage: wgpu::BufferUsages) -> Result<wgpu::Buffer> {
        let limit = self.caps.limits.max_buffer_size;
        let size = match size.max(4).checked_next_multiple_of(4) {
            Some(s) if s <= limit => s,
            _ => return Err(Error::Limit { what: "buffer size", value: size, limit }),
        };
        self.guarded(|| {
            Ok(self.device.create_buffer(&wgpu::BufferDescriptor { label: Some(label), size, usage, mapped_at_creation: false }))
        })
    }

    /// A storage buffer holding `data` (`COPY_SRC | COPY_DST` too), written through the queue.
    ///
    /// # Errors
    /// As [`Attention::create_buffer`].
    pub fn create_buffer_with(&self, label: &str, data: &[u8], usage: wgpu::BufferUsages) -> Result<wgpu::Buffer> {
        let buffer = self.create_buffer(label, data.len() as u64, usage | wgpu::BufferUsages::COPY_DST)?;
        self.guarded(|| {
            let whole = data.len() / 4 * 4;
            self.queue.write_buffer(&buffer, 0, &data[..whole]);
            if whole < data.len() {
                let mut tail = [0u8; 4];
                tail[..data.len() - whole].copy_from_slice(&data[whole..]);
                self.queue.write_buffer(&buffer, whole as u64, &tail);
            }
            Ok(())
        })?;
        Ok(buffer)
    }

    /// The compiled pipeline of `recipe`.
    pub(crate) fn kernel(&self, recipe: &Recipe) -> Result<Arc<Compiled>> {
        self.pipelines.get(recipe)
    }

    /// The pipeline cache (crate::warm: the persistent cache, warm-up).
    pub(crate) fn pipelines(&self) -> &Pipelines {
        &self.pipelines
    }

    /// Writes one dispatch's parameters.
    pub(crate) fn params<P: Params>(&self, params: &P) -> ParamSlot {
        self.params.push(&self.device, &self.queue, params)
    }

    /// Writes a small read-only table of one dispatch (bound as a storage buffer at the slot's
    /// offset). `words` must not be empty.
    pub(crate) fn table(&self, words: &[u32]) -> ParamSlot {
        self.tables.push_bytes(&self.device, &self.queue, bytemuck::cast_slice(words))
    }

    /// The bindings bound where a call has no buffer.
    pub(crate) fn unused(&self) -> &Unused {
        &self.unused
    }

    /// The scratch buffer `name`, grown to at least `bytes`. Calls recorded one after another
    /// are ordered on the GPU too, so every call of an op may reuse its scratch; a buffer that
    /// grows is replaced, and the old one lives on while recorded work refers to it.
    pub(crate) fn scratch(&self, name: &'static str, bytes: u64) -> Result<wgpu::Buffer> {
        let mut map = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let old = map.get(name).map_or(0, |b| b.size());
        if old < bytes {
            // Doubling, but never past the device's largest buffer when `bytes` fits it.
            let size = bytes.max(old.saturating_mul(2)).next_multiple_of(256).min(self.caps.limits.max_buffer_size.max(bytes));
            let buffer = self.create_buffer(name, size, wgpu::BufferUsages::STORAGE)?;
            map.insert(name, buffer);
        }
        Ok(map[name].clone())
    }

    /// Records `dispatches` of one compute pass: per dispatch, a kernel, its parameters, its
    /// bindings (in the kernel's binding order) and its grid.
    pub(crate) fn record(&self, encoder: &mut wgpu::CommandEncoder, label: &str, dispatches: &[Dispatch<'_>]) {
        let groups: Vec<wgpu::BindGroup> = dispatches
            .iter()
            .map(|d| d.kernel.layout.bind_group(&self.device, label, &d.params, &d.bindings))
            .collect();
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(label), timestamp_writes: None });
        for (d, group) in dispatches.iter().zip(&groups) {
            pass.set_pipeline(&d.kernel.pipeline);
            pass.set_bind_group(0, group, &[d.params.offset]);
            let [x, y, z] = d.grid;
            pass.dispatch_workgroups(x, y, z);
        }
    }
}

/// One dispatch to record: see [`Attention::record`].
pub(crate) struct Dispatch<'a> {
    pub kernel: Arc<Compiled>,
    pub params: ParamSlot,
    pub bindings: Vec<crate::tensor::Binding<'a>>,
    pub grid: [u32; 3],
}

/// Picks an adapter as [`Attention::with_default_adapter`] describes.
pub(crate) async fn pick_adapter(instance: &wgpu::Instance) -> Result<wgpu::Adapter> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let mut adapters = instance.enumerate_adapters(wgpu::Backends::all()).await;
        if let Ok(name) = std::env::var("WGPU_ADAPTER_NAME") {
            let name = name.to_lowercase();
            adapters.retain(|a| a.get_info().name.to_lowercase().contains(&name));
        }
        let rank = |a: &wgpu::Adapter| {
            let i = a.get_info();
            let kind = match i.device_type {
                wgpu::DeviceType::DiscreteGpu => 0,
                wgpu::DeviceType::IntegratedGpu => 1,
                wgpu::DeviceType::VirtualGpu => 2,
                wgpu::DeviceType::Cpu => 3,
                wgpu::DeviceType::Other => 4,
            };
            (kind, (i.backend == wgpu::Backend::Gl) as u8)
        };
        adapters.sort_by_key(rank);
        adapters.into_iter().next().ok_or_else(|| {
            Error::NoAdapter("no adapter found (install a Vulkan driver, e.g. Mesa's lavapipe)".into())
        })
    }
    #[cfg(target_arch = "wasm32")]
    {
        instance
            .request_adapter(&wgpu::RequestAdapterOptions::default())
            .await
            .map_err(|e| Error::NoAdapter(e.to_string()))
    }
}
