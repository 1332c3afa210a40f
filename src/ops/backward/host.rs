//! Host slices in, gradients out: [`Attention::run_backward_host`], the backward counterpart
//! of [`Attention::run_host`] (and the GPU mirror of [`crate::reference::backward`], which
//! takes the same arguments).

use crate::context::Attention;
use crate::host::{check_len, from_bytes, upload, zeroed, HostInput, HostRemainder, Readback};
use crate::ops::backward::Backward;
use crate::ops::common::Remainder;
use crate::ops::forward::Forward;
use crate::tensor::{BufferRef, TensorRef};
use crate::{Dtype, Error, Result};

/// Gradients read back from the GPU ([`Attention::run_backward_host`]), as
/// [`crate::reference::Gradients`] lays them out.
#[derive(Clone, Debug)]
pub struct HostGradients {
    /// `dL/dq`, in the layout (and length) of `q` (f16 results widened to f32).
    pub dq: Vec<f32>,
    /// `dL/dk`, in the layout of `k`.
    pub dk: Vec<f32>,
    /// `dL/dv`, in the layout of `v`.
    pub dv: Vec<f32>,
    /// `dL/dbias`, `[H, D]` (f32 in every dtype), for [`HostRemainder::AddBias`].
    pub dbias: Option<Vec<f32>>,
}

impl Attention {
    /// Uploads `input`, runs the forward pass (saving `log rem`) and then the backward pass on
    /// the GPU, and reads back the gradients of `L = sum(o * d_o) + sum(rem * d_rem)`, exactly
    /// what [`crate::reference::backward`] computes in f64 from the same arguments: `d_o` in the
    /// layout of `o` (rounded to the dtype on upload), `d_rem` (`[B, H, T]`, f32) given exactly
    /// with [`HostRemainder::Return`]. `input.path` is used for both passes (so a
    /// cooperative-matrix path is refused: the backward pass has none); the forward's early
    /// exit, if any, applies to the forward only. Works natively and on the web.
    ///
    /// # Errors
    /// Wrong slice lengths ([`Error::HostData`]), `d_rem` missing for `Return` or given for
    /// another mode ([`Error::InvalidParameter`]), everything [`Attention::forward`] and
    /// [`Attention::backward`] check, and readback failures.
    pub async fn run_backward_host(&self, input: &HostInput<'_>, d_o: &[f32], d_rem: Option<&[f32]>) -> Result<HostGradients> {
        input.validate()?;
        check_len("d_o", d_o, input.q.len())?;
        let s = input.shape;
        let rows = s.rows();
        match (input.remainder, d_rem) {
            (HostRemainder::Return, Some(r)) => check_len("d_rem", r, rows as usize)?,
            (HostRemainder::Return, None) => {
                return Err(Error::InvalidParameter { name: "d_rem", reason: "required with HostRemainder::Return".into() });
            }
            (_, Some(_)) => {
                return Err(Error::InvalidParameter {
                    name: "d_rem",
                    reason: "given, but only HostRemainder::Return has a rem output".into(),
                });
            }
            (_, None) => {}
        }
        let dev = self.device();
        let dt = input.dtype;
        let (q, k, v) = (upload(dev, "q", input.q, dt), upload(dev, "k", input.k, dt), upload(dev, "v", input.v, dt));
        let d_o_buf = upload(dev, "d_o", d_o, dt);
        let d_rem_buf = d_rem.map(|r| upload(dev, "d_rem", r, Dtype::F32));
        let (q_bytes, kv_bytes) = (input.q.len() as u64 * dt.size(), input.k.len() as u64 * dt.size());
        let o = zeroed(dev, "o", q_bytes);
        let rem = zeroed(dev, "rem", rows * 4);
        let log_rem = zeroed(dev, "log_rem", rows * 4);
        let (dq, dk, dv) = (zeroed(dev, "dq", q_bytes), zeroed(dev, "dk", kv_bytes), zeroed(dev, "dv", kv_bytes));
        let bias_len = (s.heads() * s.head_dim()) as u64;
        let (bias, d_bias) = match input.remainder {
            HostRemainder::AddBias(b) => (Some(upload(dev, "bias", b, dt)), Some(zeroed(dev, "d_bias", bias_len * 4))),
            _ => (None, None),
        };
        let t = |b| TensorRef::contiguous(b, input.layout);
        let remainder = match (&input.remainder, &bias) {
            (HostRemainder::Return, _) => Remainder::Return(BufferRef::new(&rem)),
            (HostRemainder::AddToValue, _) => Remainder::AddToValue,
            (HostRemainder::AddBias(_), Some(b)) => Remainder::AddBias(BufferRef::new(b)),
            _ => Remainder::Discard,
        };
        let fwd = Forward::new(s, dt, t(&q), t(&k), t(&v), t(&o))
            .with_mask(input.mask)
            .with_scale(input.scale)
            .with_path(input.path)
            .with_early_exit(input.early_exit_eps)
            .with_tuning(input.tuning)
            .with_log_rem(BufferRef::new(&log_rem))
            .with_remainder(remainder);
        let mut bwd = Backward::new(&fwd, t(&d_o_buf), t(&dq), t(&dk), t(&dv)).with_path(input.path);
        if let Some(r) = &d_rem_buf {
            bwd = bwd.with_d_rem(BufferRef::new(r));
        }
        if let Some(db) = &d_bias {
            bwd = bwd.with_d_bias(BufferRef::new(db));
        }
        let mut encoder = dev.create_command_encoder(&Default::default());
        self.forward(&mut encoder, &fwd)?;
        self.backward(&mut encoder, &bwd)?;
        let reads = [(&dq, q_bytes), (&dk, kv_bytes), (&dv, kv_bytes)].map(|(b, n)| Readback::record(dev, &mut encoder, b, n));
        let db_read = d_bias.as_ref().map(|b| Readback::record(dev, &mut encoder, b, bias_len * 4));
        self.queue().submit([encoder.finish()]);
        let [r_dq, r_dk, r_dv] = reads;
        let dq_out = from_bytes(&r_dq.read(dev).await?, dt);
        let dk_out = from_bytes(&r_dk.read(dev).await?, dt);
        let dv_out = from_bytes(&r_dv.read(dev).await?, dt);
        let dbias = match db_read {
            Some(r) => Some(from_bytes(&r.read(dev).await?, Dtype::F32)),
            None => None,
        };
        Ok(HostGradients { dq: dq_out, dk: dk_out, dv: dv_out, dbias })
    }

    /// Blocking [`Attention::run_backward_host`] (native only).
    ///
    /// # Errors
    /// As [`Attention::run_backward_host`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn run_backward_host_blocking(&self, input: &HostInput<'_>, d_o: &[f32], d_rem: Option<&[f32]>) -> Result<HostGradients> {
        pollster::block_on(self.run_backward_host(input, d_o, d_rem))
    }
}
