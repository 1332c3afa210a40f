//! Host slices in, host vectors out: the easy way in, for tests, examples and newcomers.
//! Creates buffers, records one forward call, submits and reads back.

#[cfg(target_arch = "wasm32")]
use std::future::Future;
#[cfg(target_arch = "wasm32")]
use std::pin::Pin;
use std::sync::{Arc, Mutex};
#[cfg(target_arch = "wasm32")]
use std::task::{Context, Poll};
use std::task::Waker;

use wgpu::util::DeviceExt;

use crate::context::Attention;
use crate::ops::common::Remainder;
use crate::ops::forward::plan::ForwardTuning;
use crate::ops::forward::Forward;
use crate::tensor::{BufferRef, TensorRef};
use crate::{Dtype, Error, KernelPath, Layout, Mask, Result, Shape};

/// Remainder handling for host-side calls (the reference takes the same).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum HostRemainder<'a> {
    /// Drop it.
    #[default]
    Discard,
    /// Return `rem` in [`HostOutput::rem`].
    Return,
    /// `o_i += rem_i * v_i`.
    AddToValue,
    /// `o_i += rem_i * bias_h`, bias `[H, D]`.
    AddBias(&'a [f32]),
}

/// A forward problem on host data (f32 slices; rounded to f16 on upload for [`Dtype::F16`]).
/// [`crate::reference::forward`] takes the same description.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct HostInput<'a> {
    /// Sizes.
    pub shape: Shape,
    /// Layout of `q`, `k`, `v` and the returned `o`.
    pub layout: Layout,
    /// Storage type on the GPU.
    pub dtype: Dtype,
    /// Queries, `heads` heads.
    pub q: &'a [f32],
    /// Keys, `kv_heads` heads.
    pub k: &'a [f32],
    /// Values, `kv_heads` heads.
    pub v: &'a [f32],
    /// Which keys each row sees.
    pub mask: Mask,
    /// Logit scale; `None` is `1 / sqrt(D)`.
    pub scale: Option<f32>,
    /// Remainder handling.
    pub remainder: HostRemainder<'a>,
    /// Kernel path.
    pub path: KernelPath,
    /// Early-exit threshold, as [`Forward::early_exit_eps`] (0 disables; the reference ignores
    /// it).
    pub early_exit_eps: f32,
    /// Kernel tuning, as [`Forward::tuning`] (the reference ignores it).
    pub tuning: ForwardTuning,
}

impl<'a> HostInput<'a> {
    /// A problem with the defaults ([`Layout::Bthd`], f32, strict mask, default scale,
    /// remainder discarded, automatic path).
    pub fn new(shape: Shape, q: &'a [f32], k: &'a [f32], v: &'a [f32]) -> Self {
        HostInput {
            shape,
            layout: Layout::Bthd,
            dtype: Dtype::F32,
            q,
            k,
            v,
            mask: Mask::Strict,
            scale: None,
            remainder: HostRemainder::Discard,
            path: KernelPath::Auto,
            early_exit_eps: 0.0,
            tuning: ForwardTuning::default(),
        }
    }

    /// Sets the layout of `q`, `k`, `v` and `o`.
    pub fn with_layout(self, layout: Layout) -> Self {
        HostInput { layout, ..self }
    }

    /// Sets the storage type on the GPU.
    pub fn with_dtype(self, dtype: Dtype) -> Self {
        HostInput { dtype, ..self }
    }

    /// Sets the mask.
    pub fn with_mask(self, mask: Mask) -> Self {
        HostInput { mask, ..self }
    }

    /// Sets the logit scale (`None`: `1 / sqrt(D)`).
    pub fn with_scale(self, scale: Option<f32>) -> Self {
        HostInput { scale, ..self }
    }

    /// Sets the remainder handling.
    pub fn with_remainder(self, remainder: HostRemainder<'a>) -> Self {
        HostInput { remainder, ..self }
    }

    /// Forces a kernel path.
    pub fn with_path(self, path: KernelPath) -> Self {
        HostInput { path, ..self }
    }

    /// Sets the early-exit threshold.
    pub fn with_early_exit(self, eps: f32) -> Self {
        HostInput { early_exit_eps: eps, ..self }
    }

    /// Sets the kernel tuning.
    pub fn with_tuning(self, tuning: ForwardTuning) -> Self {
        HostInput { tuning, ..self }
    }

    /// Checks the slice lengths against the shape.
    ///
    /// # Errors
    /// Shape errors ([`Shape::validate`]) and [`Error::HostData`] for wrong lengths.
    pub fn validate(&self) -> Result<()> {
        let s = &self.shape;
        s.validate()?;
        let (b, t, d) = (s.batch() as usize, s.seq_len() as usize, s.head_dim() as usize);
        check_len("q", self.q, b * t * s.heads() as usize * d)?;
        check_len("k", self.k, b * t * s.kv_heads() as usize * d)?;
        check_len("v", self.v, b * t * s.kv_heads() as usize * d)?;
        if let HostRemainder::AddBias(bias) = self.remainder {
            check_len("bias", bias, (s.heads() * s.head_dim()) as usize)?;
        }
        Ok(())
    }
}

/// Checks that host data `what` has `expected` elements.
pub(crate) fn check_len(what: &'static str, data: &[f32], expected: usize) -> Result<()> {
    if data.len() != expected {
        return Err(Error::HostData { what, expected, got: data.len() });
    }
    Ok(())
}

/// Results read back from the GPU.
#[derive(Clone, Debug)]
pub struct HostOutput {
    /// `o` in the input layout (f16 results widened to f32).
    pub o: Vec<f32>,
    /// `rem`, `[B, H, T]`, when requested with [`HostRemainder::Return`].
    pub rem: Option<Vec<f32>>,
    /// `log rem`, `[B, H, T]` (always returned).
    pub log_rem: Vec<f32>,
}

/// Host values as the GPU stores them for `dtype`.
pub fn to_bytes(data: &[f32], dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::F32 => bytemuck::cast_slice(data).to_vec(),
        Dtype::F16 => data.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect(),
    }
}

/// GPU bytes of `dtype` back to f32.
pub fn from_bytes(bytes: &[u8], dtype: Dtype) -> Vec<f32> {
    match dtype {
        Dtype::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F16 => bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
    }
}

/// Rounds values to what `dtype` can hold (f16 inputs for a reference that sees what the GPU
/// sees).
pub fn round_to(data: &[f32], dtype: Dtype) -> Vec<f32> {
    from_bytes(&to_bytes(data, dtype), dtype)
}

/// A storage buffer holding `data` as `dtype` (`COPY_SRC` too, to read it back).
pub fn upload(device: &wgpu::Device, label: &str, data: &[f32], dtype: Dtype) -> wgpu::Buffer {
    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents: &to_bytes(data, dtype),
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
    })
}

/// A zeroed storage buffer of at least `bytes` (rounded up to 4), readable back.
pub fn zeroed(device: &wgpu::Device, label: &str, bytes: u64) -> wgpu::Buffer {
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes.next_multiple_of(4).max(4),
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

impl Attention {
    /// A storage buffer holding `data` as `dtype` (`COPY_SRC | COPY_DST` too).
    ///
    /// # Errors
    /// As [`Attention::create_buffer`].
    pub fn upload(&self, label: &str, data: &[f32], dtype: Dtype) -> Result<wgpu::Buffer> {
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
        self.create_buffer_with(label, &to_bytes(data, dtype), usage)
    }

    /// A zeroed storage buffer of at least `bytes` (`COPY_SRC | COPY_DST` too).
    ///
    /// # Errors
    /// As [`Attention::create_buffer`].
    pub fn zeroed(&self, label: &str, bytes: u64) -> Result<wgpu::Buffer> {
        self.create_buffer(label, bytes, wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST)
    }

    /// Uploads, runs and reads back one forward call. Works natively and on the web.
    ///
    /// # Errors
    /// Wrong slice lengths, everything [`Attention::forward`] checks, and readback failures.
    pub async fn run_host(&self, input: &HostInput<'_>) -> Result<HostOutput> {
        input.validate()?;
        let s = input.shape;
        let dev = self.device();
        let (q, k, v) = (self.upload("q", input.q, input.dtype)?, self.upload("k", input.k, input.dtype)?, self.upload("v", input.v, input.dtype)?);
        let o_bytes = input.q.len() as u64 * input.dtype.size();
        let rows = s.rows();
        let o = self.zeroed("o", o_bytes)?;
        let rem = self.zeroed("rem", rows * 4)?;
        let log_rem = self.zeroed("log_rem", rows * 4)?;
        let bias = match input.remainder {
            HostRemainder::AddBias(b) => Some(self.upload("bias", b, input.dtype)?),
            _ => None,
        };
        let t = |b| TensorRef::contiguous(b, input.layout);
        let remainder = match (&input.remainder, &bias) {
            (HostRemainder::Return, _) => Remainder::Return(BufferRef::new(&rem)),
            (HostRemainder::AddToValue, _) => Remainder::AddToValue,
            (HostRemainder::AddBias(_), Some(b)) => Remainder::AddBias(BufferRef::new(b)),
            _ => Remainder::Discard,
        };
        let call = Forward::new(s, input.dtype, t(&q), t(&k), t(&v), t(&o))
            .with_mask(input.mask)
            .with_scale(input.scale)
            .with_path(input.path)
            .with_early_exit(input.early_exit_eps)
            .with_tuning(input.tuning)
            .with_log_rem(BufferRef::new(&log_rem))
            .with_remainder(remainder);
        let mut encoder = dev.create_command_encoder(&Default::default());
        self.forward(&mut encoder, &call)?;
        let (o_host, rem_host, lrem_host) = self.guarded(|| {
            let o_host = Readback::record(dev, &mut encoder, &o, o_bytes);
            let rem_host = Readback::record(dev, &mut encoder, &rem, rows * 4);
            let lrem_host = Readback::record(dev, &mut encoder, &log_rem, rows * 4);
            self.queue().submit([encoder.finish()]);
            Ok((o_host, rem_host, lrem_host))
        })?;
        let o_out = from_bytes(&o_host.read(dev).await?, input.dtype);
        let rem_out = from_bytes(&rem_host.read(dev).await?, Dtype::F32);
        let lrem_out = from_bytes(&lrem_host.read(dev).await?, Dtype::F32);
        Ok(HostOutput {
            o: o_out,
            rem: matches!(input.remainder, HostRemainder::Return).then_some(rem_out),
            log_rem: lrem_out,
        })
    }

    /// Blocking [`Attention::run_host`] (native only).
    ///
    /// # Errors
    /// As [`Attention::run_host`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn run_host_blocking(&self, input: &HostInput<'_>) -> Result<HostOutput> {
        pollster::block_on(self.run_host(input))
    }
}

/// A copy of a GPU buffer into a mappable one, recorded now and read after submit.
pub struct Readback {
    staging: wgpu::Buffer,
    len: u64,
}

impl Readback {
    /// Records a copy of the first `len` bytes of `src` (which needs `COPY_SRC`) for reading.
    pub fn record(device: &wgpu::Device, encoder: &mut wgpu::CommandEncoder, src: &wgpu::Buffer, len: u64) -> Self {
        let size = len.next_multiple_of(4).max(4);
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("sbattn readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        encoder.copy_buffer_to_buffer(src, 0, &staging, 0, size);
        Readback { staging, len }
    }

    /// Maps and returns the bytes, after the copy's submit. Never blocks on the web; natively
    /// it waits for the device.
    ///
    /// # Errors
    /// [`Error::Device`] when mapping fails (device lost, for example).
    pub async fn read(self, device: &wgpu::Device) -> Result<Vec<u8>> {
        let slot = Arc::new(Mutex::new(Shared { result: None, waker: None }));
        let cb_slot = slot.clone();
        self.staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let mut s = cb_slot.lock().unwrap_or_else(|e| e.into_inner());
            s.result = Some(r.map_err(|e| Error::device(e.to_string())));
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        });
        #[cfg(not(target_arch = "wasm32"))]
        {
            // The wait runs the callback, on this thread or on another one polling the same
            // device at the same time (which may still be running it when this wait returns):
            // wait for it, but never for ever, since a lost device may never call it. Only the
            // time between polls counts: one poll also waits for work that other threads
            // submitted meanwhile, which on a software rasteriser can take many seconds.
            let pause = std::time::Duration::from_micros(200);
            let mut idle = std::time::Duration::ZERO;
            loop {
                device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::device(e.to_string()))?;
                if let Some(done) = slot.lock().unwrap_or_else(|e| e.into_inner()).result.take() {
                    done?;
                    break;
                }
                if idle > std::time::Duration::from_secs(10) {
                    return Err(Error::DeviceLost("a readback's mapping never completed".into()));
                }
                std::thread::sleep(pause);
                idle += pause;
            }
        }
        #[cfg(target_arch = "wasm32")]
        {
            let _ = device;
            Oneshot(slot).await?;
        }
        let bytes = {
            let view = self.staging.slice(..).get_mapped_range().map_err(|e| Error::device(format!("{e:?}")))?;
            view[..self.len as usize].to_vec()
        };
        self.staging.unmap();
        Ok(bytes)
    }

    /// Blocking [`Readback::read`] (native only).
    ///
    /// # Errors
    /// As [`Readback::read`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_blocking(self, device: &wgpu::Device) -> Result<Vec<u8>> {
        pollster::block_on(self.read(device))
    }
}

struct Shared {
    result: Option<Result<()>>,
    waker: Option<Waker>,
}

/// Resolves when the map callback has run (the web, where nothing may block).
#[cfg(target_arch = "wasm32")]
struct Oneshot(Arc<Mutex<Shared>>);

#[cfg(target_arch = "wasm32")]
impl Future for Oneshot {
    type Output = Result<()>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match s.result.take() {
            Some(r) => Poll::Ready(r),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
