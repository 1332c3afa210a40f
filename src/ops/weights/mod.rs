//! The weights op: the full stick-breaking weight matrix `A` (`[T, T]` f32 per batch and
//! head) and `rem` per row, for inspection (plots, debugging, teaching), not for speed.
//!
//! Kernel: `shaders/weights/weights.wgsl` (one workgroup per query row, log-space numerics of
//! `shaders/common/stick.wgsl`); reference: [`crate::reference::weights`]; tests:
//! `tests/weights.rs`.
//!
//! Size limit: `T <=` [`MAX_WEIGHTS_SEQ_LEN`] (4096: 64 MiB of `A` per batch and head), and
//! `A` for all of the call's batches and heads, `B H T^2` f32, within the device's largest
//! storage binding (`max_storage_buffer_binding_size`, 128 MiB by default): larger problems are
//! an [`Error::Limit`]. Call it on a slice of the heads (offsets and strides of
//! [`TensorRef`]) to see part of a larger problem, as [`Attention::weights_host`] does.

pub(crate) mod params;
pub(crate) mod plan;

use crate::context::{Attention, Dispatch};
use crate::host::{from_bytes, HostInput, Readback};
use crate::kernel::consts::{FLAG_ATTEND_CURRENT, REM_RETURN, REM_SHIFT};
use crate::kernel::uniform::Addr;
use crate::ops::common::check_grid;
use crate::tensor::{bind_run, bind_tensor, check_aliasing, Access, BufferRef, TensorRef};
use crate::{Dtype, Error, Mask, Result, Shape};
use params::WeightsParams;

/// The longest sequence [`Attention::weights`] takes: `A` is `T^2` f32 per batch and head
/// (64 MiB at 4096).
pub const MAX_WEIGHTS_SEQ_LEN: u32 = 4096;

/// One weights call: `A[b][h][i][j]`, the weight of key `j` for query `i` of head `h` of
/// sequence `b` (0 where `j` is not visible), `[B, H, T, T]` f32 contiguous, and optionally
/// `rem_i` (`[B, H, T]` f32). Values are not needed: the weights depend on `q` and `k` only.
///
/// ```no_run
/// # fn f(attn: &sbattn::Attention, q: &wgpu::Buffer, k: &wgpu::Buffer, a: &wgpu::Buffer, rem: &wgpu::Buffer,
/// #      enc: &mut wgpu::CommandEncoder) -> sbattn::Result<()> {
/// use sbattn::{BufferRef, Dtype, Mask, Shape, TensorRef, Weights};
/// // B1 H4 over 2 kv heads, T 256, D 64: `a` holds 4 * 256 * 256 f32.
/// let shape = Shape::new().with_seq_len(256).with_heads(4).with_kv_heads(2).with_head_dim(64);
/// let call = Weights::new(shape, Dtype::F16, TensorRef::bthd(q), TensorRef::bhtd(k), BufferRef::new(a))
///     .with_mask(Mask::IncludeCurrent)
///     .with_rem(BufferRef::new(rem));
/// attn.weights(enc, &call)?;
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Weights<'a> {
    /// Sizes (`seq_len` at most [`MAX_WEIGHTS_SEQ_LEN`]).
    pub shape: Shape,
    /// Storage type of `q` and `k`.
    pub dtype: Dtype,
    /// Queries, `heads` heads.
    pub q: TensorRef<'a>,
    /// Keys, `kv_heads` heads.
    pub k: TensorRef<'a>,
    /// Output `A`, `[B, H, T, T]` f32 from its offset; must not share a buffer with `q` or `k`.
    pub a: BufferRef<'a>,
    /// Where to write `rem_i` (`[B, H, T]`, f32), if anywhere.
    pub rem: Option<BufferRef<'a>>,
    /// Which keys each row sees.
    pub mask: Mask,
    /// Logit scale; `None` is `1 / sqrt(head_dim)`.
    pub scale: Option<f32>,
}

impl<'a> Weights<'a> {
    /// A call with the defaults: strict mask, `1/sqrt(D)` scale, no `rem` output.
    pub fn new(shape: Shape, dtype: Dtype, q: TensorRef<'a>, k: TensorRef<'a>, a: BufferRef<'a>) -> Self {
        Weights { shape, dtype, q, k, a, rem: None, mask: Mask::Strict, scale: None }
    }

    /// Sets the mask.
    pub fn with_mask(self, mask: Mask) -> Self {
        Weights { mask, ..self }
    }

    /// Sets the logit scale (`None`: `1 / sqrt(head_dim)`).
    pub fn with_scale(self, scale: Option<f32>) -> Self {
        Weights { scale, ..self }
    }

    /// Writes `rem` per row into `rem`.
    pub fn with_rem(self, rem: BufferRef<'a>) -> Self {
        Weights { rem: Some(rem), ..self }
    }
}

/// Bytes of `A` for `shape`: `B H T^2` f32.
pub fn weights_bytes(shape: &Shape) -> u64 {
    shape.rows() * shape.seq_len() as u64 * 4
}

/// The weights of one batch and head, read back ([`Attention::weights_host`]).
#[derive(Clone, Debug, PartialEq)]
pub struct HostWeights {
    /// Sequence length `T`.
    pub seq_len: u32,
    /// `A`, `T x T` row-major: `a[i * T + j]` is the weight of key `j` for query `i`.
    pub a: Vec<f32>,
    /// `rem_i`, `T` values: the stick no key took.
    pub rem: Vec<f32>,
}

impl HostWeights {
    /// Row `i` of `A`: the weights of every key for query `i`.
    pub fn row(&self, i: u32) -> &[f32] {
        let t = self.seq_len as usize;
        &self.a[i as usize * t..(i as usize + 1) * t]
    }
}

impl Attention {
    /// Validates `call` and records its dispatch into `encoder`: `A` and, if asked, `rem`.
    ///
    /// Nothing is recorded when an error is returned.
    ///
    /// # Errors
    /// Bad shapes, scales, strides, offsets, buffer sizes or usages, aliasing outputs, f16
    /// without `SHADER_F16`; [`Error::Limit`] for `T` over [`MAX_WEIGHTS_SEQ_LEN`] or `A` over
    /// the device's largest storage binding.
    pub fn weights(&self, encoder: &mut wgpu::CommandEncoder, call: &Weights<'_>) -> Result<()> {
        self.check_alive()?;
        let s = call.shape;
        s.validate()?;
        if s.seq_len() > MAX_WEIGHTS_SEQ_LEN {
            return Err(Error::Limit {
                what: "weights sequence length",
                value: s.seq_len() as u64,
                limit: MAX_WEIGHTS_SEQ_LEN as u64,
            });
        }
        let scale = s.resolve_scale(call.scale)?;
        plan::check(self.capabilities(), call.dtype)?;
        let l = &self.capabilities().limits;
        let es = call.dtype.size();
        let dims = |heads| [s.batch(), s.seq_len(), heads];
        let q = bind_tensor("q", &call.q, dims(s.heads()), s.head_dim(), es, false, l)?;
        let k = bind_tensor("k", &call.k, dims(s.kv_heads()), s.head_dim(), es, false, l)?;
        let a = bind_run("a", &call.a, weights_bytes(&s) / 4, 4, true, l)?;
        let rem = match &call.rem {
            Some(r) => Some(bind_run("rem", r, s.rows(), 4, true, l)?),
            None => None,
        };
        let mut used = vec![(&q, Access::Read), (&k, Access::Read), (&a, Access::Write)];
        used.extend(rem.as_ref().map(|r| (r, Access::Write)));
        check_aliasing(&used)?;
        check_grid(
            l,
            &[("query rows (dispatch x)", s.seq_len() as u64), ("heads (dispatch y)", s.heads() as u64), ("batch (dispatch z)", s.batch() as u64)],
        )?;
        let current = if call.mask == Mask::IncludeCurrent { FLAG_ATTEND_CURRENT } else { 0 };
        let returns = if rem.is_some() { REM_RETURN << REM_SHIFT } else { 0 };
        let rem = rem.unwrap_or_else(|| self.unused().write(0));
        let params = WeightsParams {
            t: s.seq_len(),
            h: s.heads(),
            group: s.group(),
            d: s.head_dim(),
            q: Addr::of(&q, 1),
            k: Addr::of(&k, 1),
            a_off: a.offset,
            rem_off: rem.offset,
            flags: current | returns,
            scale,
        };
        self.guarded(|| {
            let kernel = self.kernel(&plan::recipe(call.dtype))?;
            let params = self.params(&params);
            let grid = [s.seq_len(), s.heads(), s.batch()];
            self.record(encoder, "sbattn weights", &[Dispatch { kernel, params, bindings: vec![q, k, a, rem], grid }]);
            Ok(())
        })
    }

    /// Uploads `input`'s `q` and `k` (in its layout and dtype), computes the weights of
    /// sequence `batch`, head `head` on the GPU and reads them back: what
    /// [`crate::reference::weights`] defines, in f32. `input`'s mask and scale are used; its
    /// `v`, remainder, path and tuning are not (the weights do not depend on them). Works
    /// natively and on the web.
    ///
    /// ```no_run
    /// # fn main() -> sbattn::Result<()> {
    /// use sbattn::{Attention, HostInput, Shape};
    /// let attn = Attention::with_default_adapter_blocking()?;
    /// let shape = Shape::new().with_seq_len(64).with_heads(2).with_head_dim(32);
    /// let n = 64 * 2 * 32;
    /// let (q, k, v) = (vec![0.1f32; n], vec![0.2f32; n], vec![0.0f32; n]);
    /// let w = attn.weights_host_blocking(&HostInput::new(shape, &q, &k, &v), 0, 1)?;
    /// let row: f32 = w.row(10).iter().sum::<f32>() + w.rem[10];
    /// assert!((row - 1.0).abs() < 1e-5); // each row's weights and rem make up the stick
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// Wrong slice lengths, a batch or head outside the shape ([`Error::Shape`]), everything
    /// [`Attention::weights`] checks, and readback failures.
    pub async fn weights_host(&self, input: &HostInput<'_>, batch: u32, head: u32) -> Result<HostWeights> {
        input.validate()?;
        let s = input.shape;
        if batch >= s.batch() || head >= s.heads() {
            return Err(Error::Shape(format!("(batch {batch}, head {head}) is outside {s:?}")));
        }
        let (t, d) = (s.seq_len(), s.head_dim());
        let q = self.upload("q", input.q, input.dtype)?;
        let k = self.upload("k", input.k, input.dtype)?;
        // One (batch, head) slice of the inputs, by offset: batch and head axes of extent 1.
        let qs = input.layout.strides(t, s.heads(), d);
        let ks = input.layout.strides(t, s.kv_heads(), d);
        let q_ref = TensorRef::strided(&q, qs).at_offset(qs.index(batch, 0, head));
        let k_ref = TensorRef::strided(&k, ks).at_offset(ks.index(batch, 0, head / s.group()));
        let one = Shape::new().with_seq_len(t).with_head_dim(d);
        let a_bytes = weights_bytes(&one);
        let a = self.zeroed("weights a", a_bytes)?;
        let rem = self.zeroed("weights rem", t as u64 * 4)?;
        let call = Weights::new(one, input.dtype, q_ref, k_ref, BufferRef::new(&a))
            .with_mask(input.mask)
            .with_scale(input.scale)
            .with_rem(BufferRef::new(&rem));
        let dev = self.device();
        let mut encoder = dev.create_command_encoder(&Default::default());
        self.weights(&mut encoder, &call)?;
        let (a_host, rem_host) = self.guarded(|| {
            let a_host = Readback::record(dev, &mut encoder, &a, a_bytes);
            let rem_host = Readback::record(dev, &mut encoder, &rem, t as u64 * 4);
            self.queue().submit([encoder.finish()]);
            Ok((a_host, rem_host))
        })?;
        let a_out = from_bytes(&a_host.read(dev).await?, Dtype::F32);
        let rem_out = from_bytes(&rem_host.read(dev).await?, Dtype::F32);
        Ok(HostWeights { seq_len: t, a: a_out, rem: rem_out })
    }

    /// Blocking [`Attention::weights_host`] (native only).
    ///
    /// # Errors
    /// As [`Attention::weights_host`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn weights_host_blocking(&self, input: &HostInput<'_>, batch: u32, head: u32) -> Result<HostWeights> {
        pollster::block_on(self.weights_host(input, batch, head))
    }
}
