//! The backward op: the gradients `dq`, `dk`, `dv` (and `dbias`) of causal stick-breaking
//! attention, given the output gradient `do` (and `drem`).
//!
//! Four dispatches in one compute pass (docs/ALGORITHM.md "Backward" has the maths):
//! 1. `shaders/backward/prep.wgsl`, per row: the remainder's gradient `dr`, `rem` from the
//!    forward's `log rem`, `W' = dot(do, o) - ...` (and, for `AddBias`, per-tile partial sums of
//!    `rem do`);
//! 2. `shaders/backward/dq.wgsl`, per (query tile, head, batch): walks the key tiles nearest
//!    first as the forward pass does, accumulates `dq`, and stores per row and key tile the two
//!    carries (`C`, the log stick, and `U`, the sum of `u`) and the exact row total `W`;
//! 3. `shaders/backward/dkv.wgsl`, per (key tile, kv head, batch): rebuilds each block from the
//!    carries and accumulates `dk`, `dv` over the group's heads and query tiles in a fixed order;
//! 4. `shaders/backward/dbias.wgsl` (`AddBias` only): sums the partials in a fixed order.
//!
//! No atomics anywhere: two runs give bitwise equal gradients. Scratch (owned by the context,
//! reused by every call): `16 B H T` bytes of row state, `8 B H T ceil(T / block)` bytes of
//! carries (the `O(T^2 / block)` state: 32 MiB at B = 1, H = 16, T = 4096, block 64; 512 MiB
//! at T = 16384) and, for `AddBias`, `4 B ceil(T / 64) H D` bytes of partial sums.
//!
//! [`plan::choose`] picks the variant and tiles; reference: [`crate::reference::backward`];
//! tests: `tests/backward.rs`. [`Attention::run_backward_host`] runs forward and backward on
//! host slices.

mod host;
pub(crate) mod params;
pub mod plan;

pub use host::HostGradients;

use crate::context::{Attention, Dispatch};
use crate::kernel::layout::ParamSlot;
use crate::kernel::uniform::Addr;
use crate::ops::common::{check_grid, Remainder};
use crate::ops::forward::Forward;
use crate::tensor::{bind_run, bind_tensor, check_aliasing, Access, Binding, BufferRef, TensorRef};
use crate::{Dtype, Error, KernelPath, Mask, Result, Shape};
use params::BackwardParams;
use plan::{BackwardVariant, PREP_ROWS};

/// One backward call: the gradients of a forward call's inputs, given the gradient of its
/// output.
///
/// Built from the [`Forward`] call it differentiates (its shape, dtype, `q`, `k`, `v`, `o`,
/// mask, scale, remainder mode and `log_rem`, which the forward must have written:
/// [`Forward::with_log_rem`]), the output gradient `d_o` and the three gradient outputs:
///
/// ```no_run
/// # fn f(attn: &sbattn::Attention, bufs: &[wgpu::Buffer; 10], enc: &mut wgpu::CommandEncoder) -> sbattn::Result<()> {
/// use sbattn::{Backward, BufferRef, Dtype, Forward, Remainder, Shape, TensorRef};
/// let [q, k, v, o, log_rem, rem, d_o, d_rem, dq, dkv] = bufs;
/// let shape = Shape::new().with_batch(2).with_seq_len(1024).with_heads(8).with_kv_heads(2).with_head_dim(64);
/// let t = |b| TensorRef::bthd(b);
/// let fwd = Forward::new(shape, Dtype::F16, t(q), t(k), t(v), t(o))
///     .with_remainder(Remainder::Return(BufferRef::new(rem)))
///     .with_log_rem(BufferRef::new(log_rem));
/// attn.forward(enc, &fwd)?;
/// // ... the loss gives d_o and d_rem ...
/// let dv_offset = 2 * 1024 * 2 * 64; // dk and dv side by side in one buffer
/// let bwd = Backward::new(&fwd, t(d_o), t(dq), t(dkv), t(dkv).at_offset(dv_offset))
///     .with_d_rem(BufferRef::new(d_rem));
/// attn.backward(enc, &bwd)?;
/// # Ok(()) }
/// ```
///
/// Outputs are written whole (no accumulation into what they held); they must not share memory
/// with any input or with each other. The forward's path, early exit and tuning do not matter:
/// the backward pass differentiates the exact definition, walking every key (after a forward
/// with early exit, the saved `log rem` differs from the exact one by less than its `eps`, and
/// so do the remainder's direct terms).
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Backward<'a> {
    /// Sizes.
    pub shape: Shape,
    /// Storage type of `q`, `k`, `v`, `o`, the bias, `d_o`, `dq`, `dk` and `dv`.
    pub dtype: Dtype,
    /// The forward's queries, `heads` heads.
    pub q: TensorRef<'a>,
    /// The forward's keys, `kv_heads` heads.
    pub k: TensorRef<'a>,
    /// The forward's values, `kv_heads` heads.
    pub v: TensorRef<'a>,
    /// The forward's output, `heads` heads (remainder term included as the mode says).
    pub o: TensorRef<'a>,
    /// The forward's `log rem`, `[B, H, T]` f32 ([`Forward::with_log_rem`]); required.
    pub log_rem: Option<BufferRef<'a>>,
    /// `dL/do`, `heads` heads, any layout.
    pub d_o: TensorRef<'a>,
    /// Output `dL/dq`, `heads` heads.
    pub dq: TensorRef<'a>,
    /// Output `dL/dk`, `kv_heads` heads (summed over each group's query heads).
    pub dk: TensorRef<'a>,
    /// Output `dL/dv`, `kv_heads` heads (summed over each group; with
    /// [`Remainder::AddToValue`] the remainder's share `rem_i do_i` included).
    pub dv: TensorRef<'a>,
    /// The forward's mask.
    pub mask: Mask,
    /// The forward's logit scale; `None` is `1 / sqrt(head_dim)`.
    pub scale: Option<f32>,
    /// The forward's remainder mode (and, for [`Remainder::AddBias`], its bias, which is read;
    /// the buffer of [`Remainder::Return`] is not used).
    pub remainder: Remainder<'a>,
    /// `dL/drem`, `[B, H, T]` f32: required with [`Remainder::Return`], refused otherwise.
    pub d_rem: Option<BufferRef<'a>>,
    /// Output `dL/dbias`, `[H, D]` **f32** (whatever the dtype: a sum over `B T` rows, kept
    /// at full precision for the optimizer): required with [`Remainder::AddBias`], refused
    /// otherwise.
    pub d_bias: Option<BufferRef<'a>>,
    /// Kernel path: [`KernelPath::Auto`], [`KernelPath::Subgroup`] or
    /// [`KernelPath::SharedMemory`].
    pub path: KernelPath,
    /// Whether the forward was a plain (square, dense) call: gradients of prefill on a cache
    /// and of packed sequences are not implemented yet.
    dense: bool,
}

impl<'a> Backward<'a> {
    /// The backward call of `forward`: its description and saved tensors, the output gradient
    /// `d_o` and the gradient outputs `dq` (like `q`), `dk` and `dv` (like `k` and `v`).
    /// Automatic path; add [`Backward::with_d_rem`] or [`Backward::with_d_bias`] as the
    /// remainder mode needs.
    pub fn new(forward: &Forward<'a>, d_o: TensorRef<'a>, dq: TensorRef<'a>, dk: TensorRef<'a>, dv: TensorRef<'a>) -> Self {
        Backward {
            shape: forward.shape,
            dtype: forward.dtype,
            q: forward.q,
            k: forward.k,
            v: forward.v,
            o: forward.o,
            log_rem: forward.log_rem,
            d_o,
            dq,
            dk,
            dv,
            mask: forward.mask,
            scale: forward.scale,
            remainder: forward.remainder,
            d_rem: None,
            d_bias: None,
            path: KernelPath::Auto,
            dense: forward.is_dense(),
        }
    }

    /// Sets `dL/drem` ([`Remainder::Return`]).
    pub fn with_d_rem(self, d_rem: BufferRef<'a>) -> Self {
        Backward { d_rem: Some(d_rem), ..self }
    }

    /// Sets the `dL/dbias` output ([`Remainder::AddBias`]; f32).
    pub fn with_d_bias(self, d_bias: BufferRef<'a>) -> Self {
        Backward { d_bias: Some(d_bias), ..self }
    }

    /// Sets the forward's `log rem` (when the [`Forward`] given to [`Backward::new`] did not
    /// name it).
    pub fn with_log_rem(self, log_rem: BufferRef<'a>) -> Self {
        Backward { log_rem: Some(log_rem), ..self }
    }

    /// Forces a kernel path.
    pub fn with_path(self, path: KernelPath) -> Self {
        Backward { path, ..self }
    }
}

/// A validated backward call.
struct Prepared<'a> {
    variant: BackwardVariant,
    params: BackwardParams,
    /// q, k, v, o, d_o, log_rem, d_rem, bias, dq, dk, dv, d_bias (unused ones bound to the
    /// context's unused buffers).
    b: [Binding<'a>; 12],
    add_bias: bool,
    /// dq and dkv grids (x: tiles), prep grid x, and the scratch bytes.
    n_ktiles: u32,
    n_ptiles: u32,
    scratch_bytes: u64,
}

impl Attention {
    /// The variant a backward call with this dtype, head dim and path would run.
    ///
    /// # Errors
    /// As [`plan::choose`].
    pub fn backward_variant(&self, dtype: Dtype, head_dim: u32, path: KernelPath) -> Result<BackwardVariant> {
        plan::choose(self.capabilities(), dtype, head_dim, path)
    }

    /// Validates `call` and records its dispatches into `encoder` (one compute pass of three
    /// or four dispatches).
    ///
    /// Nothing is recorded when an error is returned. The scratch the call uses belongs to the
    /// context and is reused by the next backward call recorded after it.
    ///
    /// # Errors
    /// Bad shapes or scales; strides, offsets, buffer sizes or usages of any tensor; gradient
    /// buffers missing or given for the wrong remainder mode ([`Error::InvalidParameter`]);
    /// outputs that share memory with an input or with each other ([`Error::Aliasing`]);
    /// features the device lacks; sizes over device limits (the scratch included): see
    /// [`crate::Error`].
    pub fn backward(&self, encoder: &mut wgpu::CommandEncoder, call: &Backward<'_>) -> Result<()> {
        let prep = self.prepare_backward(call)?;
        let v = &prep.variant;
        let kernels = [
            self.kernel(&plan::prep_recipe(call.dtype))?,
            self.kernel(&v.dq_recipe())?,
            self.kernel(&v.dkv_recipe())?,
        ];
        let dbias = if prep.add_bias { Some(self.kernel(&plan::dbias_recipe())?) } else { None };
        let state_buf = self.scratch("sbattn backward state", prep.scratch_bytes)?;
        let state = Binding { name: "backward scratch", buffer: &state_buf, start: 0, size: prep.scratch_bytes, offset: 0, strides: [0; 3] };
        let slot = self.params(&prep.params);
        let same = |s: &ParamSlot| ParamSlot { buffer: s.buffer.clone(), offset: s.offset, size: s.size };
        let [q, k, v_, o, d_o, log_rem, d_rem, bias, dq, dk, dv, d_bias] = prep.b;
        let (h, hk, batch) = (call.shape.heads(), call.shape.kv_heads(), call.shape.batch());
        let [prep_k, dq_k, dkv_k] = kernels;
        let mut dispatches = vec![
            Dispatch { kernel: prep_k, params: same(&slot), bindings: vec![o, d_o, v_, log_rem, d_rem, bias, state], grid: [prep.n_ptiles, h, batch] },
            Dispatch { kernel: dq_k, params: same(&slot), bindings: vec![q, k, v_, d_o, dq, state], grid: [prep.n_ktiles, h, batch] },
            Dispatch { kernel: dkv_k, params: same(&slot), bindings: vec![q, k, v_, d_o, state, dk, dv], grid: [prep.n_ktiles, hk, batch] },
        ];
        if let Some(kernel) = dbias {
            dispatches.push(Dispatch { kernel, params: same(&slot), bindings: vec![state, d_bias], grid: [h, 1, 1] });
        }
        self.record(encoder, "sbattn backward", &dispatches);
        Ok(())
    }

    /// Every check of a backward call, then its variant, parameters and bindings.
    fn prepare_backward<'a>(&'a self, call: &Backward<'a>) -> Result<Prepared<'a>> {
        if !call.dense {
            return Err(Error::Unsupported(
                "the backward pass of a forward with earlier keys (Keys other than Queries) or packed sequences (with_varlen)".into(),
            ));
        }
        let s = call.shape;
        s.validate()?;
        let scale = s.resolve_scale(call.scale)?;
        let l = &self.capabilities().limits;
        let es = call.dtype.size();
        let dims = |heads| [s.batch(), s.seq_len(), heads];
        let (d, rows, bias_len) = (s.head_dim(), s.rows(), s.heads() as u64 * s.head_dim() as u64);
        let q = bind_tensor("q", &call.q, dims(s.heads()), d, es, false, l)?;
        let k = bind_tensor("k", &call.k, dims(s.kv_heads()), d, es, false, l)?;
        let v = bind_tensor("v", &call.v, dims(s.kv_heads()), d, es, false, l)?;
        let o = bind_tensor("o", &call.o, dims(s.heads()), d, es, false, l)?;
        let d_o = bind_tensor("d_o", &call.d_o, dims(s.heads()), d, es, false, l)?;
        let log_rem = match &call.log_rem {
            Some(r) => bind_run("log_rem", r, rows, 4, false, l)?,
            None => {
                return Err(Error::InvalidParameter {
                    name: "log_rem",
                    reason: "the backward pass needs the forward's log rem (Forward::with_log_rem)".into(),
                })
            }
        };
        let unused = self.unused();
        let d_rem = match (&call.remainder, &call.d_rem) {
            (Remainder::Return(_), Some(r)) => Some(bind_run("d_rem", r, rows, 4, false, l)?),
            (Remainder::Return(_), None) => {
                return Err(Error::InvalidParameter { name: "d_rem", reason: "required with Remainder::Return".into() });
            }
            (_, Some(_)) => {
                return Err(Error::InvalidParameter {
                    name: "d_rem",
                    reason: "given, but only Remainder::Return has a rem output".into(),
                });
            }
            (_, None) => None,
        };
        let (bias, d_bias) = match (&call.remainder, &call.d_bias) {
            (Remainder::AddBias(b), Some(db)) => {
                (Some(bind_run("bias", b, bias_len, es, false, l)?), Some(bind_run("d_bias", db, bias_len, 4, true, l)?))
            }
            (Remainder::AddBias(_), None) => {
                return Err(Error::InvalidParameter { name: "d_bias", reason: "required with Remainder::AddBias".into() });
            }
            (_, Some(_)) => {
                return Err(Error::InvalidParameter {
                    name: "d_bias",
                    reason: "given, but only Remainder::AddBias has a bias".into(),
                });
            }
            (_, None) => (None, None),
        };
        let dq = bind_tensor("dq", &call.dq, dims(s.heads()), d, es, true, l)?;
        let dk = bind_tensor("dk", &call.dk, dims(s.kv_heads()), d, es, true, l)?;
        let dv = bind_tensor("dv", &call.dv, dims(s.kv_heads()), d, es, true, l)?;
        let mut used = vec![(&q, Access::Read), (&k, Access::Read), (&v, Access::Read), (&o, Access::Read), (&d_o, Access::Read), (&log_rem, Access::Read)];
        used.extend(d_rem.iter().map(|b| (b, Access::Read)));
        used.extend(bias.iter().map(|b| (b, Access::Read)));
        used.extend([(&dq, Access::Write), (&dk, Access::Write), (&dv, Access::Write)]);
        used.extend(d_bias.iter().map(|b| (b, Access::Write)));
        check_aliasing(&used)?;

        let variant = plan::choose(self.capabilities(), call.dtype, d, call.path)?;
        let block = variant.tiles.block;
        let n_ktiles = s.seq_len().div_ceil(block);
        let n_ptiles = s.seq_len().div_ceil(PREP_ROWS);
        let add_bias = bias.is_some();
        // The scratch, in f32 words: rows, carries, partials (shaders/backward/io.wgsl).
        let bh = s.batch() as u64 * s.heads() as u64;
        let t = s.seq_len() as u64;
        let rows_words = 4 * bh * t;
        let carry_words = 2 * bh * n_ktiles as u64 * t;
        let part_words = if add_bias { bh * n_ptiles as u64 * d as u64 } else { 0 };
        let words = rows_words + carry_words + part_words;
        let max_bind = l.max_storage_buffer_binding_size.min(l.max_buffer_size);
        if words * 4 > max_bind || words > u32::MAX as u64 {
            return Err(Error::Limit { what: "backward scratch (bytes)", value: words * 4, limit: max_bind.min(4 * u32::MAX as u64) });
        }
        check_grid(
            l,
            &[
                ("tiles (dispatch x)", n_ktiles as u64),
                ("prep row tiles (dispatch x)", n_ptiles as u64),
                ("heads (dispatch y)", s.heads() as u64),
                ("batch (dispatch z)", s.batch() as u64),
            ],
        )?;
        let rem_mode = call.remainder.mode();
        let ac = if call.mask == Mask::IncludeCurrent { crate::kernel::consts::FLAG_ATTEND_CURRENT } else { 0 };
        let params = BackwardParams {
            t: s.seq_len(),
            h: s.heads(),
            group: s.group(),
            d,
            q: Addr::of(&q, 1),
            k: Addr::of(&k, 1),
            v: Addr::of(&v, 1),
            o: Addr::of(&o, 1),
            d_o: Addr::of(&d_o, 1),
            dq: Addr::of(&dq, 1),
            dk: Addr::of(&dk, 1),
            dv: Addr::of(&dv, 1),
            lrem_off: log_rem.offset,
            drem_off: d_rem.map_or(0, |b| b.offset),
            bias_off: bias.map_or(0, |b| b.offset),
            dbias_off: d_bias.map_or(0, |b| b.offset),
            flags: ac | (rem_mode << crate::kernel::consts::REM_SHIFT),
            scale,
            mc: variant.head_chunks(d),
            n_ktiles,
            rows_off: 0,
            carry_off: rows_words as u32,
            part_off: (rows_words + carry_words) as u32,
            n_ptiles,
            batch: s.batch(),
            n_stage: block / variant.tiles.stage_rows,
            ..Default::default()
        };
        let b = [
            q,
            k,
            v,
            o,
            d_o,
            log_rem,
            d_rem.unwrap_or_else(|| unused.read()),
            bias.unwrap_or_else(|| unused.read()),
            dq,
            dk,
            dv,
            d_bias.unwrap_or_else(|| unused.write(0)),
        ];
        Ok(Prepared { variant, params, b, add_bias, n_ktiles, n_ptiles, scratch_bytes: (words * 4).max(16) })
    }
}
