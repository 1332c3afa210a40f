//! Partial results and their merge as API: attention of a few queries over the part of each
//! sequence's keys that one cache holds, kept unnormalised with the log of the stick that part
//! spent, and the associative merge of such parts (docs/ALGORITHM.md, "Decode and split-K"). An
//! engine can hold one long sequence in several caches, on several devices or in several
//! calls, and combine them:
//!
//! ```text
//! part c: (o_c, s_c)   o_c = sum_{j in c} w_j v_j (the stick starting whole at c's nearest key)
//!                      s_c = sum_{j in c} log(1 - beta_j)
//! merge (parts in key order, the last nearest the queries):
//!   o = sum_c exp(E_c) o_c,  E_c = sum of s over the parts after c;  log rem = sum_c s_c
//! ```
//!
//! The decode kernels already work this way inside one call (split-K); these entry points run
//! the partial kernel and the merge on the caller's buffers.

use super::Decode;
use crate::context::{Attention, Dispatch};
use crate::kernel::uniform::Addr;
use crate::ops::common::{check_dtype, check_grid, Remainder, RowOutputs};
use crate::ops::decode::params::MergeParams;
use crate::ops::decode::plan;
use crate::tensor::{bind_run, bind_tensor, check_aliasing, Access, Binding, BufferRef, TensorRef};
use crate::{Dtype, Error, Mask, Result, Shape};

/// Partial results: per query row (`[B, H, n]`, the decode's row order) `parts` slots, each an
/// unnormalised output and the log of the stick its keys spent.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Partials<'a> {
    /// `[B, H, n, parts, ceil(D / 4) * 4]` f32; the element offset a multiple of 4.
    pub o: BufferRef<'a>,
    /// `[B, H, n, parts]` f32.
    pub log: BufferRef<'a>,
    /// Slots per row.
    pub parts: u32,
}

impl<'a> Partials<'a> {
    /// `parts` slots per row in `o` and `log` (sizes: [`Partials::bytes`]).
    pub fn new(o: BufferRef<'a>, log: BufferRef<'a>, parts: u32) -> Self {
        Partials { o, log, parts }
    }

    /// Bytes of `o` and of `log` for `rows` query rows (`B H n`) of head dim `head_dim`.
    pub fn bytes(rows: u64, head_dim: u32, parts: u32) -> (u64, u64) {
        let slots = rows * parts as u64;
        (slots * 16 * head_dim.div_ceil(4) as u64, slots * 4)
    }

    /// Validated bindings of `o` (vec4 offset) and `log` for `rows` rows of head dim `d`.
    fn bind(&self, rows: u64, d: u32, output: bool, l: &wgpu::Limits) -> Result<[Binding<'a>; 2]> {
        if self.parts == 0 {
            return Err(Error::InvalidParameter { name: "parts", reason: "0 slots per row".into() });
        }
        if !self.o.offset.is_multiple_of(4) {
            return Err(Error::InvalidParameter { name: "partials.o", reason: format!("element offset {} is not a multiple of 4", self.o.offset) });
        }
        let slots = rows.checked_mul(self.parts as u64).ok_or_else(|| Error::Shape("partial slots overflow u64".into()))?;
        let vec4s = slots.checked_mul(d.div_ceil(4) as u64).ok_or_else(|| Error::Shape("partial outputs overflow u64".into()))?;
        let o = bind_run("partials.o", &self.o, vec4s * 4, 4, output, l)?;
        let log = bind_run("partials.log", &self.log, slots, 4, output, l)?;
        if o.offset as u64 + vec4s * 4 > u32::MAX as u64 || log.offset as u64 + slots > u32::MAX as u64 {
            return Err(Error::Limit { what: "partial result elements", value: vec4s * 4, limit: u32::MAX as u64 });
        }
        Ok([o, log])
    }
}

/// Merges partial results into the rows' outputs ([`Attention::merge`]).
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Merge<'a> {
    /// The rows: `batch`, `seq_len` = queries per sequence, `heads`, `kv_heads`, `head_dim`.
    pub shape: Shape,
    /// Storage type of `o`, the values and the bias.
    pub dtype: Dtype,
    /// The parts, in key order (slot `parts - 1` holds the keys nearest the queries).
    pub partials: Partials<'a>,
    /// Output `[B, n, H, D]`.
    pub o: TensorRef<'a>,
    /// The remainder handling of the whole call.
    pub remainder: Remainder<'a>,
    /// Where to write `log rem` per row, `[B, H, n]` f32.
    pub log_rem: Option<BufferRef<'a>>,
    /// The queries' own values `[B, n, Hkv, D]`: required with [`Remainder::AddToValue`].
    pub values: Option<TensorRef<'a>>,
}

impl<'a> Merge<'a> {
    /// Merges `partials` into `o`, remainder discarded.
    pub fn new(shape: Shape, dtype: Dtype, partials: Partials<'a>, o: TensorRef<'a>) -> Self {
        Merge { shape, dtype, partials, o, remainder: Remainder::Discard, log_rem: None, values: None }
    }

    /// Sets the remainder handling (with [`Remainder::AddToValue`], also
    /// [`Merge::with_values`]).
    pub fn with_remainder(self, remainder: Remainder<'a>) -> Self {
        Merge { remainder, ..self }
    }

    /// Writes `log rem` per row.
    pub fn with_log_rem(self, log_rem: BufferRef<'a>) -> Self {
        Merge { log_rem: Some(log_rem), ..self }
    }

    /// The queries' own values, for [`Remainder::AddToValue`].
    pub fn with_values(self, values: TensorRef<'a>) -> Self {
        Merge { values: Some(values), ..self }
    }
}

impl Attention {
    /// Records `call`'s attention over the keys its cache holds as slot `part` of `out`: the
    /// unnormalised output and the log of the stick spent, per query row. `later` is the number
    /// of tokens of every sequence after the cache's last one (held elsewhere: nearer parts);
    /// with `later = 0` the queries are the cache's last `new_tokens` tokens, as in
    /// [`Attention::decode`]; with `later >= new_tokens` every key the cache holds is visible to
    /// every query. The remainder and `log rem` are the merge's business: `call` must discard
    /// the remainder and write no `log rem`; its `o` is validated but not written.
    ///
    /// ```no_run
    /// # fn f(attn: &sbattn::Attention, older: &sbattn::KvCache, newer: &sbattn::KvCache, q: &wgpu::Buffer,
    /// #      o: &wgpu::Buffer, po: &wgpu::Buffer, ps: &wgpu::Buffer, enc: &mut wgpu::CommandEncoder) -> sbattn::Result<()> {
    /// use sbattn::{BufferRef, Decode, Dtype, Merge, Partials, Shape, TensorRef};
    /// // One token for each of 4 sequences whose first tokens are in `older` and whose last
    /// // (the new one included) are in `newer`.
    /// let parts = Partials::new(BufferRef::new(po), BufferRef::new(ps), 2);
    /// let later = newer.lengths()[0]; // the same for every sequence here
    /// attn.decode_partial(enc, &Decode::new(older, 32, 1, TensorRef::bthd(q), TensorRef::bthd(o)), later, &parts, 0)?;
    /// attn.decode_partial(enc, &Decode::new(newer, 32, 1, TensorRef::bthd(q), TensorRef::bthd(o)), 0, &parts, 1)?;
    /// let shape = Shape::new().with_batch(4).with_seq_len(1).with_heads(32).with_kv_heads(8).with_head_dim(128);
    /// attn.merge(enc, &Merge::new(shape, Dtype::F16, parts, TensorRef::bthd(o)))?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Attention::decode`] (a sequence's `len + later` must cover its queries);
    /// [`Error::InvalidParameter`] for a remainder or `log rem` on `call`, `part >= parts` or a
    /// misaligned partial buffer; size and aliasing errors for `out`.
    pub fn decode_partial(&self, encoder: &mut wgpu::CommandEncoder, call: &Decode<'_>, later: u32, out: &Partials<'_>, part: u32) -> Result<()> {
        self.check_alive()?;
        if !matches!(call.remainder, Remainder::Discard) || call.log_rem.is_some() {
            return Err(Error::InvalidParameter {
                name: "remainder",
                reason: "a partial result keeps the stick left; set the remainder and log rem on the merge".into(),
            });
        }
        if part >= out.parts {
            return Err(Error::InvalidParameter { name: "part", reason: format!("slot {part} of {}", out.parts) });
        }
        let mut prep = self.prepare_decode(call, later)?;
        let desc = call.cache.desc();
        let rows = desc.batch as u64 * call.heads as u64 * call.new_tokens as u64;
        let l = &self.capabilities().limits;
        let [po, ps] = out.bind(rows, desc.head_dim, true, l)?;
        let [q, k, v, _] = &prep.inputs;
        check_aliasing(&[(q, Access::Read), (k, Access::Read), (v, Access::Read), (&prep.outputs[0], Access::Read), (&po, Access::Write), (&ps, Access::Write)])?;
        let m = &mut prep.merge;
        m.flags |= crate::kernel::consts::FLAG_PARTIAL_OUT;
        (m.parts, m.part, m.po_off, m.ps_off) = (out.parts, part, po.offset / 4, ps.offset);
        self.guarded(|| self.record_decode(encoder, call, prep, Some([po, ps])))
    }

    /// Validates `call` and records the merge of its partial results into `o` (and the
    /// remainder, `log rem`), one dispatch.
    ///
    /// # Errors
    /// Bad shapes; [`Error::InvalidParameter`] for `AddToValue` without values (or values
    /// without it); tensor errors (usage, size, strides, aliasing) as in
    /// [`Attention::forward`].
    pub fn merge(&self, encoder: &mut wgpu::CommandEncoder, call: &Merge<'_>) -> Result<()> {
        self.check_alive()?;
        let s = call.shape;
        s.validate()?;
        check_dtype(self.capabilities(), call.dtype)?;
        let l = &self.capabilities().limits;
        let (n, d, es) = (s.seq_len(), s.head_dim(), call.dtype.size());
        let rows = s.rows();
        let [po, ps] = call.partials.bind(rows, d, false, l)?;
        // The merge kernel reads its inputs from the start of their bindings.
        if po.offset != 0 || ps.offset != 0 {
            let align = l.min_storage_buffer_offset_alignment;
            return Err(Error::InvalidParameter { name: "partials", reason: format!("the merge reads partial buffers from an offset that is a multiple of {align} bytes") });
        }
        let o = bind_tensor("o", &call.o, [s.batch(), n, s.heads()], d, es, true, l)?;
        let rem = RowOutputs::bind(&call.remainder, call.log_rem.as_ref(), self.unused(), rows, s.heads() as u64 * d as u64, es, l)?;
        let v = match (&call.values, &call.remainder) {
            (Some(v), Remainder::AddToValue) => bind_tensor("values", v, [s.batch(), n, s.kv_heads()], d, es, false, l)?,
            (None, Remainder::AddToValue) => {
                return Err(Error::InvalidParameter { name: "values", reason: "Remainder::AddToValue needs the queries' own values".into() })
            }
            (Some(_), _) => return Err(Error::InvalidParameter { name: "values", reason: "only Remainder::AddToValue reads values".into() }),
            (None, _) => self.unused().read(),
        };
        let mut used = vec![(&po, Access::Read), (&ps, Access::Read), (&o, Access::Write)];
        if call.values.is_some() {
            used.push((&v, Access::Read));
        }
        used.extend(rem.used());
        check_aliasing(&used)?;
        check_grid(l, &[("heads x queries (merge dispatch x)", s.heads() as u64 * n as u64), ("batch (merge dispatch y)", s.batch() as u64)])?;
        let params = MergeParams {
            h: s.heads(),
            n,
            d,
            splits: call.partials.parts,
            dp4: d.div_ceil(4),
            group: s.group(),
            flags: rem.flags(Mask::Strict, false),
            capacity: n,
            o: Addr::of(&o, 1),
            v: Addr::of(&v, 1),
            rem_off: rem.rem.offset,
            lrem_off: rem.log_rem.offset,
            bias_off: rem.bias.offset,
            cw: d.div_ceil(4).next_power_of_two().min(crate::kernel::consts::WORKGROUP),
            parts: 1,
            part: 0,
            po_off: 0,
            ps_off: 0,
            ..Default::default()
        };
        // The values' positions: query i of every sequence is token i of `values`.
        let lengths = vec![n; s.batch() as usize];
        self.guarded(|| {
            let kernel = self.kernel(&plan::merge_recipe(call.dtype))?;
            let params = self.params(&params);
            let table = self.table(&lengths);
            let lengths = Binding { name: "lengths", buffer: &table.buffer, start: table.offset as u64, size: table.size, offset: 0, strides: [0; 3] };
            let bindings = vec![po, ps, lengths, v, o, rem.rem, rem.log_rem, rem.bias, self.unused().write(2), self.unused().write(3)];
            self.record(encoder, "sbattn merge", &[Dispatch { kernel, params, bindings, grid: [s.heads() * n, s.batch(), 1] }]);
            Ok(())
        })
    }
}
