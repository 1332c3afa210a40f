//! The host side of the forward kernel: device setup, the pipeline cache, validation and
//! recording into the caller's encoder.

use std::sync::Arc;

use wgpu::util::DeviceExt;

use crate::config::{self, Capabilities, Variant};
use crate::params::{ForwardParams, FLAG_ATTEND_CURRENT, FLAG_EARLY_EXIT, FLAG_WRITE_LOG_REM, REM_SHIFT};
use crate::pipelines::{PipelineSpec, Pipelines, ShaderChecks};
use crate::shader::{self, Target};
use crate::tensor::{self, Axis, Binding, BufferRef, TensorRef};
use crate::{Dtype, Error, Mask, Path, Result, Shape};

/// What to do with the stick left over after the last key, `rem_i`.
#[derive(Clone, Copy, Debug, Default)]
pub enum Remainder<'a> {
    /// Drop it.
    #[default]
    Discard,
    /// Write `rem_i` (f32) into a `[B, H, T]` buffer.
    Return(BufferRef<'a>),
    /// `o_i += rem_i * v_i`: the rest of the stick goes to the current token.
    AddToValue,
    /// `o_i += rem_i * bias_h` with a `[H, D]` bias in the call's dtype.
    AddBias(BufferRef<'a>),
}

/// One forward (prefill) call: causal stick-breaking attention over `T` tokens.
///
/// Build with [`Forward::new`] and adjust the public fields:
/// ```ignore
/// let call = Forward { mask: Mask::IncludeCurrent, ..Forward::new(shape, Dtype::F16, q, k, v, o) };
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Forward<'a> {
    /// Sizes.
    pub shape: Shape,
    /// Storage type of `q`, `k`, `v`, `o` (and the bias).
    pub dtype: Dtype,
    /// Queries, `heads` heads.
    pub q: TensorRef<'a>,
    /// Keys, `kv_heads` heads.
    pub k: TensorRef<'a>,
    /// Values, `kv_heads` heads.
    pub v: TensorRef<'a>,
    /// Output, `heads` heads; must not share a buffer with any input.
    pub o: TensorRef<'a>,
    /// Which keys each row sees.
    pub mask: Mask,
    /// Logit scale; `None` is `1 / sqrt(head_dim)`.
    pub scale: Option<f32>,
    /// Remainder handling.
    pub remainder: Remainder<'a>,
    /// Where to write `log rem_i` per row (`[B, H, T]`, f32), the state a backward pass needs.
    pub log_rem: Option<BufferRef<'a>>,
    /// Kernel path ([`Path::Auto`] unless testing).
    pub path: Path,
    /// Early exit: once every row of a query tile has less than `eps` of its stick left
    /// (`rem` so far `< eps`), the keys further left are skipped. Their weights sum to less
    /// than that stick, so each output moves by at most `eps * max_j |v_j|`, and the `rem`
    /// returned (the stick left where the walk stopped) exceeds the exact one by less than
    /// `eps`. `0.0` (the default) walks every key, exactly as the definition; values must lie
    /// in `[0, 1)`.
    pub early_exit_eps: f32,
}

impl<'a> Forward<'a> {
    /// A call with the defaults: strict mask, `1/sqrt(D)` scale, remainder discarded, no
    /// `log_rem` output, automatic path.
    pub fn new(
        shape: Shape,
        dtype: Dtype,
        q: TensorRef<'a>,
        k: TensorRef<'a>,
        v: TensorRef<'a>,
        o: TensorRef<'a>,
    ) -> Self {
        Forward {
            shape,
            dtype,
            q,
            k,
            v,
            o,
            mask: Mask::Strict,
            scale: None,
            remainder: Remainder::Discard,
            log_rem: None,
            path: Path::Auto,
            early_exit_eps: 0.0,
        }
    }
}

/// Stick-breaking attention on one wgpu device: its capabilities, the kernels compiled so
/// far, and the calls that record work into the caller's encoders.
///
/// Cheap to share across threads (`&self` everywhere); pipelines are compiled on first use
/// per [`Variant`] and kept.
pub struct Attention {
    device: wgpu::Device,
    queue: wgpu::Queue,
    caps: Capabilities,
    layout: wgpu::BindGroupLayout,
    pipeline_layout: wgpu::PipelineLayout,
    /// Bound where a call has no rem / log_rem / bias buffer (one each: a buffer may not be
    /// bound writable and read-only in one dispatch).
    dummies: [wgpu::Buffer; 3],
    pipelines: Pipelines<Variant>,
}

/// Buffers bound where a call has no rem / log_rem / bias buffer (one each: a buffer may not
/// be bound writable and read-only in one dispatch).
pub(crate) fn unused_bindings(device: &wgpu::Device) -> [wgpu::Buffer; 3] {
    ["rem", "log_rem", "bias"].map(|name| {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(&format!("sbattn unused {name} binding")),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        })
    })
}

pub(crate) fn storage_entry(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

impl Attention {
    /// Uses the caller's device and queue. Enable `SHADER_F16` for f16 and `SUBGROUP` for the
    /// subgroup path when creating the device; see [`Attention::device_descriptor`].
    pub fn new(device: &wgpu::Device, queue: &wgpu::Queue) -> Self {
        Self::build(device, queue, None)
    }

    /// Uses the caller's device and queue, reading from `adapter` what wgpu reports only
    /// there (its cooperative-matrix configurations, which the tensor-core path needs).
    pub fn from_adapter(adapter: &wgpu::Adapter, device: &wgpu::Device, queue: &wgpu::Queue) -> Self {
        Self::build(device, queue, Some(adapter))
    }

    fn build(device: &wgpu::Device, queue: &wgpu::Queue, adapter: Option<&wgpu::Adapter>) -> Self {
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        }];
        // q, k, v read; o, rem, log_rem written; bias read.
        for (binding, read_only) in [(1, true), (2, true), (3, true), (4, false), (5, false), (6, false), (7, true)] {
            entries.push(storage_entry(binding, read_only));
        }
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("sbattn forward"),
            entries: &entries,
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("sbattn forward"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let dummies = unused_bindings(device);
        Attention {
            device: device.clone(),
            queue: queue.clone(),
            caps: Capabilities::of(device, adapter),
            layout,
            pipeline_layout,
            dummies,
            pipelines: Pipelines::new(device),
        }
    }

    /// Compiles kernels from now on with every wgpu runtime check, loop bounding included
    /// (the default keeps index clamping but not loop bounding; see [`ShaderChecks`]).
    pub fn with_full_runtime_checks(mut self) -> Self {
        // SAFETY: more checks than the default.
        unsafe { self.pipelines.set_checks(ShaderChecks::Full) };
        self
    }

    /// Compiles kernels from now on without wgpu's runtime checks (no index clamping, no
    /// loop bounding).
    ///
    /// # Safety
    /// Sound only because every call is validated on the host (shapes, strides, offsets and
    /// buffer sizes, so that no global index can leave its binding) and every workgroup index
    /// is in range by construction; the default keeps wgpu's index clamping as a second line
    /// of defence. The tests run both.
    pub unsafe fn without_runtime_checks(mut self) -> Self {
        // SAFETY: the caller opted in, as this function's contract says.
        unsafe { self.pipelines.set_checks(ShaderChecks::Off) };
        self
    }

    /// The runtime checks kernels are compiled with.
    pub fn shader_checks(&self) -> ShaderChecks {
        self.pipelines.checks()
    }

    /// Features and limits to request from `adapter` for the fastest paths it has: f16,
    /// subgroups, cooperative matrices and timestamp queries where offered, and the adapter's
    /// own limits.
    ///
    /// Cooperative matrices are an experimental wgpu feature: where the adapter has them, the
    /// descriptor opts into wgpu's experimental features (the tensor-core path is tested on
    /// the hardware it claims, see BENCHMARKS.md).
    pub fn device_descriptor(adapter: &wgpu::Adapter) -> wgpu::DeviceDescriptor<'static> {
        let wanted = wgpu::Features::SHADER_F16
            | wgpu::Features::SUBGROUP
            | wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX
            | wgpu::Features::TIMESTAMP_QUERY
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS;
        let required_features = adapter.features() & wanted;
        let experimental_features = if required_features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
            // SAFETY: only the cooperative-matrix feature is used, by one kernel whose loads
            // and stores stay inside workgroup arrays it fills itself.
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
    /// WebGPU before GL), honouring `WGPU_BACKEND` and `WGPU_ADAPTER_NAME`, and makes a device.
    ///
    /// # Errors
    /// [`Error::NoAdapter`] when none is found, [`Error::RequestDevice`] when it refuses.
    pub async fn with_default_adapter() -> Result<Self> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = pick_adapter(&instance).await?;
        let (device, queue) = adapter
            .request_device(&Self::device_descriptor(&adapter))
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

    /// The variant a call with this dtype, head dim and path would run.
    ///
    /// # Errors
    /// As [`config::choose`].
    pub fn plan(&self, dtype: Dtype, head_dim: u32, path: Path) -> Result<Variant> {
        config::choose(&self.caps, dtype, head_dim, path, true)
    }

    /// Compiles (once) and returns the pipeline of `variant`.
    ///
    /// # Errors
    /// [`Error::Device`] if the device rejects the shader (a bug: every variant is validated
    /// by naga in the tests).
    pub fn pipeline(&self, variant: &Variant) -> Result<Arc<wgpu::ComputePipeline>> {
        self.pipelines.get(*variant, || PipelineSpec {
            label: "sbattn forward",
            source: shader::forward_source(variant, Target::current()),
            layout: &self.pipeline_layout,
            entry: "main",
            constants: Vec::new(),
            zero_workgroup_memory: true,
        })
    }

    /// Validates `call` and records its dispatch into `encoder`.
    ///
    /// Nothing is recorded when an error is returned. Each call gets its own parameter
    /// buffer, so any number of calls with different shapes may share one encoder and one
    /// submit.
    ///
    /// # Errors
    /// Bad shapes, scales, strides, offsets, buffer sizes or usages, aliasing outputs,
    /// features the device lacks, sizes over device limits: see [`Error`].
    pub fn forward(&self, encoder: &mut wgpu::CommandEncoder, call: &Forward<'_>) -> Result<()> {
        let (variant, params, bindings) = self.prepare(call)?;
        let pipeline = self.pipeline(&variant)?;
        let uniform = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("sbattn forward params"),
            contents: bytemuck::bytes_of(&params),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() }];
        entries.extend(bindings.iter().enumerate().map(|(i, b)| b.entry(i as u32 + 1)));
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("sbattn forward"),
            layout: &self.layout,
            entries: &entries,
        });
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("sbattn forward"),
            timestamp_writes: None,
        });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(params.n_qtiles, call.shape.heads, call.shape.batch);
        Ok(())
    }

    /// All validation of a call: the variant, the parameters and the seven storage bindings.
    fn prepare<'a>(&'a self, call: &Forward<'a>) -> Result<(Variant, ForwardParams, [Binding<'a>; 7])> {
        let s = call.shape;
        s.validate()?;
        let scale = s.resolve_scale(call.scale)?;
        let eps = call.early_exit_eps;
        if !(0.0..1.0).contains(&eps) {
            return Err(Error::InvalidParameter { name: "early_exit_eps", reason: format!("{eps} is not in [0, 1)") });
        }
        let l = &self.caps.limits;
        let es = call.dtype.size();
        let axes = |t: &TensorRef<'_>, heads: u32| {
            [
                Axis { extent: s.batch as u64, stride: t.strides.batch },
                Axis { extent: s.seq_len as u64, stride: t.strides.token },
                Axis { extent: heads as u64, stride: t.strides.head },
            ]
        };
        let d = s.head_dim as u64;
        let tensor = |name, t: &TensorRef<'a>, heads, output| {
            tensor::bind(name, t.buffer, t.offset, &axes(t, heads), d, es, output, l)
        };
        let q = tensor("q", &call.q, s.heads, false)?;
        let k = tensor("k", &call.k, s.kv_heads, false)?;
        let v = tensor("v", &call.v, s.kv_heads, false)?;
        let o = tensor("o", &call.o, s.heads, true)?;
        // The tensor-core kernel loads whole 16 x 16 blocks of k and v from memory: 16-byte
        // aligned rows (bindings start 256-byte aligned, so element offsets and strides that
        // are multiples of 8).
        let aligned = |b: &Binding<'_>| b.offset.is_multiple_of(8) && b.strides.iter().all(|x| x.is_multiple_of(8));
        let variant = config::choose(&self.caps, call.dtype, s.head_dim, call.path, aligned(&k) && aligned(&v))?;
        let rows = (s.batch as u64) * (s.heads as u64) * (s.seq_len as u64);
        let (mode, rem, log_rem, bias) =
            remainder_bindings(&call.remainder, call.log_rem.as_ref(), &self.dummies, rows, s.heads as u64 * d, es, l)?;
        // (name, binding, written, used): written bindings must not meet any other.
        let list = [
            ("q", &q, false, true),
            ("k", &k, false, true),
            ("v", &v, false, true),
            ("bias", &bias, false, mode == 3),
            ("o", &o, true, true),
            ("rem", &rem, true, mode == 1),
            ("log_rem", &log_rem, true, call.log_rem.is_some()),
        ];
        for (i, a) in list.iter().enumerate() {
            for b in &list[i + 1..] {
                if a.3 && b.3 && (a.2 || b.2) {
                    tensor::check_disjoint((a.0, a.1, a.2), (b.0, b.1, b.2))?;
                }
            }
        }
        let tiles = variant.tiles;
        let n_qtiles = s.seq_len.div_ceil(tiles.block_m);
        let lim = l.max_compute_workgroups_per_dimension;
        for (what, value) in [("query tiles (dispatch x)", n_qtiles), ("heads (dispatch y)", s.heads), ("batch (dispatch z)", s.batch)] {
            if value > lim {
                return Err(Error::Limit { what, value: value as u64, limit: lim as u64 });
            }
        }
        let flags = match call.mask {
            Mask::Strict => 0,
            Mask::IncludeCurrent => FLAG_ATTEND_CURRENT,
        } | (mode << REM_SHIFT)
            | if call.log_rem.is_some() { FLAG_WRITE_LOG_REM } else { 0 }
            | if call.early_exit_eps > 0.0 { FLAG_EARLY_EXIT } else { 0 };
        let params = ForwardParams {
            t: s.seq_len,
            h: s.heads,
            group: s.heads / s.kv_heads,
            d: s.head_dim,
            q_off: q.offset,
            q_sb: q.strides[0],
            q_st: q.strides[1],
            q_sh: q.strides[2],
            k_off: k.offset,
            k_sb: k.strides[0],
            k_st: k.strides[1],
            k_sh: k.strides[2],
            v_off: v.offset,
            v_sb: v.strides[0],
            v_st: v.strides[1],
            v_sh: v.strides[2],
            o_off: o.offset,
            o_sb: o.strides[0],
            o_st: o.strides[1],
            o_sh: o.strides[2],
            rem_off: rem.offset,
            lrem_off: log_rem.offset,
            bias_off: bias.offset,
            flags,
            scale,
            n_qtiles,
            log_eps: if call.early_exit_eps > 0.0 { call.early_exit_eps.ln() } else { f32::NEG_INFINITY },
            _pad0: 0,
        };
        Ok((variant, params, [q, k, v, o, rem, log_rem, bias]))
    }
}

/// The bindings of a call's remainder outputs for `rows` query rows (f32 `rem` and `log_rem`)
/// and a `bias_len`-element bias of `es`-byte elements: `(mode, rem, log_rem, bias)`, with
/// `dummies` (rem, log_rem, bias) bound where unused. `mode` is the remainder field of the
/// kernels' flags.
pub(crate) fn remainder_bindings<'a>(
    remainder: &Remainder<'a>,
    log_rem: Option<&BufferRef<'a>>,
    dummies: &'a [wgpu::Buffer; 3],
    rows: u64,
    bias_len: u64,
    es: u64,
    l: &wgpu::Limits,
) -> Result<(u32, Binding<'a>, Binding<'a>, Binding<'a>)> {
    let run = |name, r: &BufferRef<'a>, len: u64, es: u64, output| tensor::bind(name, r.buffer, r.offset, &[], len, es, output, l);
    let unused = |i: usize| run("unused", &BufferRef::new(&dummies[i]), 1, 4, false);
    let (mode, rem, bias) = match remainder {
        Remainder::Discard => (0, unused(0)?, unused(2)?),
        Remainder::Return(r) => (1, run("rem", r, rows, 4, true)?, unused(2)?),
        Remainder::AddToValue => (2, unused(0)?, unused(2)?),
        Remainder::AddBias(b) => (3, unused(0)?, run("bias", b, bias_len, es, false)?),
    };
    let log_rem = match log_rem {
        Some(r) => run("log_rem", r, rows, 4, true)?,
        None => unused(1)?,
    };
    Ok((mode, rem, log_rem, bias))
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
