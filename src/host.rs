//! Host slices in, host vectors out: the easy way in, for tests, examples and newcomers.
//! Creates buffers, records one forward call, submits and reads back.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use wgpu::util::DeviceExt;

use crate::attention::{Attention, Forward, Remainder};
use crate::tensor::{BufferRef, TensorRef};
use crate::{Dtype, Error, Layout, Mask, Path, Result, Shape};

/// Remainder handling for host-side calls (the reference takes the same).
#[derive(Clone, Copy, Debug, Default)]
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
#[derive(Clone, Copy, Debug)]
pub struct HostInput<'a> {
    /// Sizes.
    pub shape: Shape,
    /// Layout of `q`, `k`, `v` and the returned `o`.
    pub layout: Layout,
    /// Storage type on the GPU.
    pub dtype: Dtype,
    /// Queries.
    pub q: &'a [f32],
    /// Keys.
    pub k: &'a [f32],
    /// Values.
    pub v: &'a [f32],
    /// Which keys each row sees.
    pub mask: Mask,
    /// Logit scale; `None` is `1 / sqrt(D)`.
    pub scale: Option<f32>,
    /// Remainder handling.
    pub remainder: HostRemainder<'a>,
    /// Kernel path.
    pub path: Path,
    /// Early-exit threshold, as [`Forward::early_exit_eps`] (0 disables).
    pub early_exit_eps: f32,
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
            path: Path::Auto,
            early_exit_eps: 0.0,
        }
    }
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

/// Rounds values to what `dtype` can hold (f16 inputs for a reference that sees what the
/// GPU sees).
pub fn round_to(data: &[f32], dtype: Dtype) -> Vec<f32> {
    from_bytes(&to_bytes(data, dtype), dtype)
}

impl Attention {
    /// Uploads, runs and reads back one forward call. Works natively and on the web.
    ///
    /// # Errors
    /// Wrong slice lengths, everything [`Attention::forward`] checks, and readback failures.
    pub async fn run_host(&self, input: &HostInput<'_>) -> Result<HostOutput> {
        let s = input.shape;
        crate::reference::check_inputs(&s, input.q, input.k, input.v)?;
        if let HostRemainder::AddBias(b) = input.remainder {
            let expected = (s.heads * s.head_dim) as usize;
            if b.len() != expected {
                return Err(Error::HostData { what: "bias", expected, got: b.len() });
            }
        }
        let dev = self.device();
        let upload = |label, data: &[f32], dtype| {
            dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: &to_bytes(data, dtype),
                usage: wgpu::BufferUsages::STORAGE,
            })
        };
        let output = |label, bytes: u64| {
            dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes.next_multiple_of(4).max(4),
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            })
        };
        let (q, k, v) = (upload("q", input.q, input.dtype), upload("k", input.k, input.dtype), upload("v", input.v, input.dtype));
        let o_bytes = input.q.len() as u64 * input.dtype.size();
        let rows = (s.batch * s.heads * s.seq_len) as u64;
        let o = output("o", o_bytes);
        let rem = output("rem", rows * 4);
        let log_rem = output("log_rem", rows * 4);
        let bias = match input.remainder {
            HostRemainder::AddBias(b) => Some(upload("bias", b, input.dtype)),
            _ => None,
        };
        let (t, h, hk, d) = (s.seq_len, s.heads, s.kv_heads, s.head_dim);
        let mut call = Forward::new(
            s,
            input.dtype,
            TensorRef::with_layout(&q, input.layout, t, h, d),
            TensorRef::with_layout(&k, input.layout, t, hk, d),
            TensorRef::with_layout(&v, input.layout, t, hk, d),
            TensorRef::with_layout(&o, input.layout, t, h, d),
        );
        call.mask = input.mask;
        call.scale = input.scale;
        call.path = input.path;
        call.early_exit_eps = input.early_exit_eps;
        call.log_rem = Some(BufferRef::new(&log_rem));
        call.remainder = match (&input.remainder, &bias) {
            (HostRemainder::Return, _) => Remainder::Return(BufferRef::new(&rem)),
            (HostRemainder::AddToValue, _) => Remainder::AddToValue,
            (HostRemainder::AddBias(_), Some(b)) => Remainder::AddBias(BufferRef::new(b)),
            _ => Remainder::Discard,
        };
        let mut encoder = dev.create_command_encoder(&Default::default());
        self.forward(&mut encoder, &call)?;
        let o_host = readback_later(dev, &mut encoder, &o, o_bytes);
        let rem_host = readback_later(dev, &mut encoder, &rem, rows * 4);
        let lrem_host = readback_later(dev, &mut encoder, &log_rem, rows * 4);
        self.queue().submit([encoder.finish()]);
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

/// Records a copy of the first `len` bytes of `src` (which needs `COPY_SRC`) for reading.
pub fn readback_later(device: &wgpu::Device, encoder: &mut wgpu::CommandEncoder, src: &wgpu::Buffer, len: u64) -> Readback {
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

impl Readback {
    /// Maps and returns the bytes, after the copy's submit. Never blocks on the web; natively
    /// it waits for the device.
    ///
    /// # Errors
    /// [`Error::Device`] when mapping fails (device lost, for example).
    pub async fn read(self, device: &wgpu::Device) -> Result<Vec<u8>> {
        let slot = Arc::new(Mutex::new(Shared { result: None, waker: None }));
        let cb_slot = slot.clone();
        self.staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let mut s = cb_slot.lock().unwrap();
            s.result = Some(r.map_err(|e| Error::Device(e.to_string())));
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        });
        #[cfg(not(target_arch = "wasm32"))]
        device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Device(e.to_string()))?;
        #[cfg(target_arch = "wasm32")]
        let _ = device;
        Oneshot(slot).await?;
        let bytes = {
            let view = self.staging.slice(..).get_mapped_range().map_err(|e| Error::Device(format!("{e:?}")))?;
            view[..self.len as usize].to_vec()
        };
        self.staging.unmap();
        Ok(bytes)
    }
}

struct Shared {
    result: Option<Result<()>>,
    waker: Option<Waker>,
}

/// Resolves when the map callback has run.
struct Oneshot(Arc<Mutex<Shared>>);

impl Future for Oneshot {
    type Output = Result<()>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let mut s = self.0.lock().unwrap();
        match s.result.take() {
            Some(r) => Poll::Ready(r),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
