//! The forward (prefill) op: causal stick-breaking attention over `T` tokens, or over new
//! tokens on a context (a cache, a prefix, per-sequence lengths), dense or packed (varlen).
//!
//! Every call runs from a schedule the host writes: one record per sequence (where its
//! queries and keys are) and a list of work items (sequence, query tile), heaviest first. One
//! kernel thus serves dense batches, ragged batches and chunked prefill; the kernels clamp the
//! records, so that no index leaves its buffer whatever the schedule holds.
//!
//! Kernels: `shaders/forward/portable.wgsl` with `common/scan_subgroup.wgsl` or `scan_shared.wgsl`
//! (f32 arithmetic, any adapter), and `shaders/forward/coop.wgsl` (cooperative matrices); both
//! with `forward/io.wgsl`. [`plan::choose`] picks the variant and tiles; reference:
//! [`crate::reference::forward`]; tests: `tests/forward.rs`, `tests/invariants.rs`.

pub(crate) mod params;
pub mod plan;
mod split;

use crate::context::{Attention, Dispatch};
use crate::kernel::uniform::{Addr, Pages};
use crate::ops::cache::KvCache;
use crate::ops::decode::{Decode, MAX_NEW_TOKENS};
use crate::ops::common::{check_grid, early_exit, Remainder, RowOutputs};
use crate::tensor::{bind_tensor, check_aliasing, Access, Binding, BufferRef, TensorRef};
use crate::{Dtype, Error, KernelPath, Mask, Result, Shape};
use params::ForwardParams;
use plan::{ForwardTuning, ForwardVariant};

/// Which keys each sequence's queries see: always the sequence's keys up to the query's own
/// token (and that token with [`Mask::IncludeCurrent`]); a sequence's queries are its *last*
/// tokens, query `i` of `n` at position `keys - n + i`.
///
/// Without [`Forward::with_varlen`], `k` and `v` are `[B, keys, Hkv, D]` (any strides; the
/// token axis at least as long as the longest sequence's keys); with it, packed
/// `[total keys, Hkv, D]` (sequence after sequence, each its own key count long).
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub enum Keys<'a> {
    /// The queries' own tokens (self-attention): as many keys as queries.
    #[default]
    Queries,
    /// `context` earlier tokens, then the queries' own: `context + n` keys for `n` queries.
    Prefix(u32),
    /// `keys[b]` keys for sequence `b` (at least its queries).
    Lengths(&'a [u32]),
    /// The cache's tokens, as many per sequence as its host-side lengths say
    /// ([`KvCache::lengths`]): append the new tokens' keys and values first. The call's `k` and
    /// `v` are the cache's ([`Forward::on_cache`]); its layout rules, not the ones above. A
    /// paged cache is read through its block table (the host mirror's rows, written into the
    /// call's schedule).
    Cache(&'a KvCache),
}

/// One forward call: causal stick-breaking attention over `T` tokens.
///
/// ```no_run
/// # fn f(attn: &sbattn::Attention, cache: &sbattn::KvCache, q: &wgpu::Buffer, o: &wgpu::Buffer,
/// #      enc: &mut wgpu::CommandEncoder) -> sbattn::Result<()> {
/// use sbattn::{Dtype, Forward, Shape, TensorRef};
/// // Chunked prefill: 512 new tokens for each of 4 sequences whose keys and values were just
/// // appended to the cache (which may hold earlier tokens of each).
/// let shape = Shape::new().with_batch(4).with_seq_len(512).with_heads(32).with_kv_heads(8).with_head_dim(128);
/// attn.forward(enc, &Forward::on_cache(shape, Dtype::F16, TensorRef::bthd(q), cache, TensorRef::bthd(o)))?;
/// # Ok(()) }
/// ```
///
/// ```no_run
/// # fn f(attn: &sbattn::Attention, q: &wgpu::Buffer, k: &wgpu::Buffer, v: &wgpu::Buffer, o: &wgpu::Buffer,
/// #      rem: &wgpu::Buffer, enc: &mut wgpu::CommandEncoder) -> sbattn::Result<()> {
/// use sbattn::{BufferRef, Dtype, Forward, Mask, Remainder, Shape, TensorRef};
/// let shape = Shape::new().with_batch(2).with_seq_len(1024).with_heads(8).with_kv_heads(2).with_head_dim(64);
/// let call = Forward::new(shape, Dtype::F16, TensorRef::bthd(q), TensorRef::bhtd(k), TensorRef::bhtd(v), TensorRef::bthd(o))
///     .with_mask(Mask::IncludeCurrent)
///     .with_remainder(Remainder::Return(BufferRef::new(rem)));
/// attn.forward(enc, &call)?;
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
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
    /// Kernel path ([`KernelPath::Auto`] unless testing).
    pub path: KernelPath,
    /// Early exit: once every row of a query tile has less than `eps` of its stick left
    /// (`rem` so far `< eps`), the keys further left are skipped. Their weights sum to less
    /// than that stick, so each output moves by at most `eps * max_j |v_j|`, and the `rem`
    /// returned (the stick left where the walk stopped) exceeds the exact one by less than
    /// `eps`. `0.0` (the default) walks every key, exactly as the definition; values must lie
    /// in `[0, 1)`.
    pub early_exit_eps: f32,
    /// Kernel tuning, for measurements.
    pub tuning: ForwardTuning,
    /// Where the keys are ([`Keys::Queries`] by default).
    pub keys: Keys<'a>,
    /// Packed sequences ([`Forward::with_varlen`]); `None`: dense `[B, T, H, D]`.
    pub cu_seqlens: Option<&'a [u32]>,
}

impl<'a> Forward<'a> {
    /// A call with the defaults: strict mask, `1/sqrt(D)` scale, remainder discarded, no
    /// `log_rem` output, automatic path, no early exit.
    pub fn new(shape: Shape, dtype: Dtype, q: TensorRef<'a>, k: TensorRef<'a>, v: TensorRef<'a>, o: TensorRef<'a>) -> Self {
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
            path: KernelPath::Auto,
            early_exit_eps: 0.0,
            tuning: ForwardTuning::default(),
            keys: Keys::Queries,
            cu_seqlens: None,
        }
    }

    /// A call whose keys and values are `cache`'s ([`Keys::Cache`]): `shape.batch` must be the
    /// cache's, and its head dim and key/value heads; `q` holds `shape.seq_len` new tokens per
    /// sequence (or the packed ones, with [`Forward::with_varlen`]), whose keys and values the
    /// cache already holds as its last tokens. Up to [`MAX_NEW_TOKENS`] dense queries per
    /// sequence with the automatic path and tuning run on the decode kernels (as
    /// [`Attention::decode`] would); a forced path keeps the forward kernels.
    pub fn on_cache(shape: Shape, dtype: Dtype, q: TensorRef<'a>, cache: &'a KvCache, o: TensorRef<'a>) -> Self {
        Forward { keys: Keys::Cache(cache), ..Forward::new(shape, dtype, q, cache.k(), cache.v(), o) }
    }

    /// Whether this is a plain call: keys are the queries' own tokens, no packed sequences.
    pub(crate) fn is_dense(&self) -> bool {
        matches!(self.keys, Keys::Queries) && self.cu_seqlens.is_none()
    }

    /// Sets where the keys are.
    pub fn with_keys(self, keys: Keys<'a>) -> Self {
        Forward { keys, ..self }
    }

    /// Packed (variable-length) sequences: sequence `b`'s queries are tokens
    /// `cu_seqlens[b] .. cu_seqlens[b + 1]` of `q` and `o`, which are `[total, H, D]`
    /// (`shape.seq_len` = `total`, `shape.batch` = the number of sequences =
    /// `cu_seqlens.len() - 1`; empty sequences allowed); `rem` and `log_rem` are `[H, total]`.
    /// Keys: see [`Keys`].
    pub fn with_varlen(self, cu_seqlens: &'a [u32]) -> Self {
        Forward { cu_seqlens: Some(cu_seqlens), ..self }
    }

    /// Sets the mask.
    pub fn with_mask(self, mask: Mask) -> Self {
        Forward { mask, ..self }
    }

    /// Sets the logit scale (`None`: `1 / sqrt(head_dim)`).
    pub fn with_scale(self, scale: Option<f32>) -> Self {
        Forward { scale, ..self }
    }

    /// Sets the remainder handling.
    pub fn with_remainder(self, remainder: Remainder<'a>) -> Self {
        Forward { remainder, ..self }
    }

    /// Writes `log rem` per row into `log_rem`.
    pub fn with_log_rem(self, log_rem: BufferRef<'a>) -> Self {
        Forward { log_rem: Some(log_rem), ..self }
    }

    /// Forces a kernel path.
    pub fn with_path(self, path: KernelPath) -> Self {
        Forward { path, ..self }
    }

    /// Sets the early-exit threshold ([`Forward::early_exit_eps`]).
    pub fn with_early_exit(self, eps: f32) -> Self {
        Forward { early_exit_eps: eps, ..self }
    }

    /// Sets the kernel tuning.
    pub fn with_tuning(self, tuning: ForwardTuning) -> Self {
        Forward { tuning, ..self }
    }
}

/// A validated forward call: what to compile and what to bind.
struct Prepared<'a> {
    variant: ForwardVariant,
    params: ForwardParams,
    /// q, k, v, o, rem, log_rem, bias (the kernels' binding order; the schedule follows).
    bindings: Vec<Binding<'a>>,
    /// The schedule's words (forward/io.wgsl).
    schedule: Vec<u32>,
    grid: [u32; 3],
}

/// One sequence of a call: its first query token in `q`, its queries, its first key token in
/// `k`, its keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Seq {
    pub q0: u32,
    pub tq: u32,
    pub k0: u32,
    pub tk: u32,
}

/// The sequences of a call and the token extents of its tensors.
#[derive(Debug)]
pub(crate) struct Layout {
    pub seqs: Vec<Seq>,
    /// Batch entries of `q`, `o` (1 packed) and of `k`, `v`.
    pub q_batch: u32,
    pub k_batch: u32,
    /// Tokens per batch entry of `q`, `o` and of `k`, `v`.
    pub q_tokens: u32,
    pub k_tokens: u32,
    pub packed: bool,
}

impl Layout {
    /// Checks the call's sequence description and lays out its sequences.
    pub fn of(call: &Forward<'_>) -> Result<Self> {
        let s = call.shape;
        let bad = |m: String| Err(Error::Shape(m));
        let queries: Vec<(u32, u32)> = match call.cu_seqlens {
            None => (0..s.batch()).map(|_| (0, s.seq_len())).collect(),
            Some(cu) => {
                if cu.len() != s.batch() as usize + 1 {
                    return bad(format!("cu_seqlens has {} entries; batch {} needs {}", cu.len(), s.batch(), s.batch() + 1));
                }
                if cu[0] != 0 || cu[cu.len() - 1] != s.seq_len() {
                    return bad(format!("cu_seqlens must run from 0 to seq_len {} (the packed tokens)", s.seq_len()));
                }
                if let Some(i) = cu.windows(2).position(|w| w[1] < w[0]) {
                    return bad(format!("cu_seqlens decreases at entry {}", i + 1));
                }
                cu.windows(2).map(|w| (w[0], w[1] - w[0])).collect()
            }
        };
        let mut cached = 0;
        let keys: Vec<u32> = match call.keys {
            Keys::Queries => queries.iter().map(|q| q.1).collect(),
            Keys::Prefix(c) => {
                let mut v = Vec::with_capacity(queries.len());
                for q in &queries {
                    v.push(q.1.checked_add(c).ok_or_else(|| Error::Shape(format!("prefix {c} + {} queries overflows u32", q.1)))?);
                }
                v
            }
            Keys::Lengths(l) => {
                if l.len() != queries.len() {
                    return bad(format!("{} key lengths for {} sequences", l.len(), queries.len()));
                }
                l.to_vec()
            }
            Keys::Cache(c) => {
                let d = c.desc();
                if d.batch != s.batch() || d.kv_heads != s.kv_heads() || d.head_dim != s.head_dim() || d.dtype != call.dtype {
                    return bad(format!(
                        "the cache ({} sequences, {} kv heads, head dim {}, {:?}) does not match the call ({}, {}, {}, {:?})",
                        d.batch,
                        d.kv_heads,
                        d.head_dim,
                        d.dtype,
                        s.batch(),
                        s.kv_heads(),
                        s.head_dim(),
                        call.dtype
                    ));
                }
                cached = d.capacity;
                c.lengths().to_vec()
            }
        };
        if let Some(b) = queries.iter().zip(&keys).position(|(q, &k)| q.1 > k) {
            return bad(format!("sequence {b} has {} queries but {} keys: its queries must be its last keys' tokens", queries[b].1, keys[b]));
        }
        let packed = call.cu_seqlens.is_some();
        let mut seqs = Vec::with_capacity(queries.len());
        let mut k_total = 0u64;
        for (&(q0, tq), &tk) in queries.iter().zip(&keys) {
            let k0 = match call.keys {
                Keys::Cache(_) => 0,
                _ if packed => k_total as u32,
                _ => 0,
            };
            seqs.push(Seq { q0, tq, k0, tk });
            k_total += tk as u64;
        }
        let longest = keys.iter().copied().max().unwrap_or(0);
        let (k_batch, k_tokens) = match call.keys {
            Keys::Cache(_) => (s.batch(), cached),
            _ if packed => {
                let total = u32::try_from(k_total).map_err(|_| Error::Shape(format!("{k_total} packed keys exceed u32")))?;
                (1, total)
            }
            _ => (s.batch(), longest),
        };
        if k_tokens == 0 {
            return bad("no keys: every sequence is empty".into());
        }
        let (q_batch, q_tokens) = if packed { (1, s.seq_len()) } else { (s.batch(), s.seq_len()) };
        Ok(Layout { seqs, q_batch, k_batch, q_tokens, k_tokens, packed })
    }

    /// Keys of the longest sequence.
    fn k_tokens_used(&self) -> u32 {
        self.seqs.iter().map(|s| s.tk).max().unwrap_or(0)
    }

    /// The schedule's words for query tiles of `block_m` rows (forward/io.wgsl): the work
    /// items (sequence, tile), heaviest (most keys to walk) first, then the sequence records.
    /// Returns the words and the number of work items.
    pub fn schedule(&self, block_m: u32) -> (Vec<u32>, u32) {
        let mut items: Vec<(u64, u32, u32)> = Vec::new();
        for (b, sq) in self.seqs.iter().enumerate() {
            let p0 = (sq.tk - sq.tq) as u64;
            for qt in 0..sq.tq.div_ceil(block_m) {
                let last = ((qt as u64 + 1) * block_m as u64).min(sq.tq as u64);
                items.push((p0 + last, b as u32, qt));
            }
        }
        items.sort_by_key(|&(w, b, qt)| (std::cmp::Reverse(w), b, qt));
        let n = items.len() as u32;
        let mut words = Vec::with_capacity(2 * items.len() + 4 * self.seqs.len());
        for (_, b, qt) in items {
            words.extend([b, qt]);
        }
        for sq in &self.seqs {
            words.extend([sq.q0, sq.tq, sq.k0, sq.tk]);
        }
        (words, n)
    }
}

/// The decode call that runs `call` faster, if there is one: a few queries per sequence on a
/// cache ([`MAX_NEW_TOKENS`] at most, dense, automatic path and tuning) go to the decode
/// kernels, which split the cache's keys over workgroups; the forward kernels give every
/// query tile of up to 64 rows to one workgroup. The description is checked first, so errors
/// are the forward's.
fn as_decode<'a>(call: &Forward<'a>) -> Result<Option<Decode<'a>>> {
    let Keys::Cache(cache) = call.keys else { return Ok(None) };
    let s = call.shape;
    if call.cu_seqlens.is_some() || call.path != KernelPath::Auto || call.tuning != ForwardTuning::default() || s.seq_len() > MAX_NEW_TOKENS {
        return Ok(None);
    }
    s.validate()?;
    Layout::of(call)?;
    let mut d = Decode::new(cache, s.heads(), s.seq_len(), call.q, call.o)
        .with_mask(call.mask)
        .with_scale(call.scale)
        .with_remainder(call.remainder)
        .with_early_exit(call.early_exit_eps);
    if let Some(l) = call.log_rem {
        d = d.with_log_rem(l);
    }
    Ok(Some(d))
}

impl Attention {
    /// The variant a forward call with this dtype, head dim and path would run (k and v
    /// assumed 16-byte aligned).
    ///
    /// # Errors
    /// As [`plan::choose`].
    pub fn forward_variant(&self, dtype: Dtype, head_dim: u32, path: KernelPath) -> Result<ForwardVariant> {
        self.forward_variant_tuned(dtype, head_dim, path, &ForwardTuning::default())
    }

    /// [`Attention::forward_variant`] with `tuning`.
    ///
    /// # Errors
    /// As [`plan::choose`].
    pub fn forward_variant_tuned(&self, dtype: Dtype, head_dim: u32, path: KernelPath, tuning: &ForwardTuning) -> Result<ForwardVariant> {
        plan::choose(self.capabilities(), dtype, head_dim, path, true, tuning)
    }

    /// Validates `call` and records its dispatch into `encoder`.
    ///
    /// Nothing is recorded when an error is returned. Any number of calls with different shapes
    /// may share one encoder and one submit.
    ///
    /// # Errors
    /// Bad shapes, scales, strides, offsets, buffer sizes or usages, aliasing outputs, features
    /// the device lacks, sizes over device limits: see [`crate::Error`].
    pub fn forward(&self, encoder: &mut wgpu::CommandEncoder, call: &Forward<'_>) -> Result<()> {
        self.check_alive()?;
        if let Some(decode) = as_decode(call)? {
            return self.decode(encoder, &decode);
        }
        // A call past the binding size limit runs as several (split.rs); every piece is
        // checked before anything is recorded.
        let preps = match self.prepare_forward(call) {
            Ok(p) => vec![p],
            Err(e) if split::over_binding_limit(&e) => {
                let Some(parts) = split::pieces(call, &|c| self.prepare_forward(c).map(|_| ()))? else { return Err(e) };
                parts.iter().map(|c| self.prepare_forward(c)).collect::<Result<Vec<_>>>()?
            }
            Err(e) => return Err(e),
        };
        self.guarded(|| {
            let mut dispatches = Vec::with_capacity(preps.len());
            let tables: Vec<_> = preps.iter().map(|p| self.table(&p.schedule)).collect();
            for (prep, table) in preps.into_iter().zip(&tables) {
                let kernel = self.kernel(&prep.variant.recipe().with_paging(prep.params.pg.shift != 0))?;
                let params = self.params(&prep.params);
                let mut bindings = prep.bindings;
                let sched = Binding { name: "schedule", buffer: &table.buffer, start: table.offset as u64, size: table.size, offset: 0, strides: [0; 3] };
                bindings.insert(7, sched);
                dispatches.push(Dispatch { kernel, params, bindings, grid: prep.grid });
            }
            self.record(encoder, "sbattn forward", &dispatches);
            Ok(())
        })
    }

    /// Every check of a forward call, then its variant, parameters and bindings.
    fn prepare_forward<'a>(&'a self, call: &Forward<'a>) -> Result<Prepared<'a>> {
        let s = call.shape;
        s.validate()?;
        let scale = s.resolve_scale(call.scale)?;
        let log_eps = early_exit(call.early_exit_eps)?;
        let lay = Layout::of(call)?;
        let l = &self.capabilities().limits;
        let es = call.dtype.size();
        let q = bind_tensor("q", &call.q, [lay.q_batch, lay.q_tokens, s.heads()], s.head_dim(), es, false, l)?;
        let o = bind_tensor("o", &call.o, [lay.q_batch, lay.q_tokens, s.heads()], s.head_dim(), es, true, l)?;
        let (k, v) = match call.keys {
            Keys::Cache(c) => c.bindings(l)?,
            _ => {
                let dims = [lay.k_batch, lay.k_tokens, s.kv_heads()];
                (bind_tensor("k", &call.k, dims, s.head_dim(), es, false, l)?, bind_tensor("v", &call.v, dims, s.head_dim(), es, false, l)?)
            }
        };
        // Rows: [B, H, T] dense, [H, total] packed.
        let n_rows = lay.q_batch as u64 * s.heads() as u64 * lay.q_tokens as u64;
        let rows = RowOutputs::bind(&call.remainder, call.log_rem.as_ref(), self.unused(), n_rows, (s.heads() * s.head_dim()) as u64, es, l)?;
        let mut used = vec![(&q, Access::Read), (&k, Access::Read), (&v, Access::Read), (&o, Access::Write)];
        used.extend(rows.used());
        check_aliasing(&used)?;
        // The tensor-core kernel loads whole 16 x 16 blocks of k and v from memory: 16-byte
        // aligned rows (bindings start 256-byte aligned, so element offsets and strides that are
        // multiples of 8).
        let aligned = |b: &Binding<'_>| b.offset.is_multiple_of(8) && b.strides.iter().all(|x| x.is_multiple_of(8));
        let variant = plan::choose(self.capabilities(), call.dtype, s.head_dim(), call.path, aligned(&k) && aligned(&v), &call.tuning)?;
        let (mut schedule, n_work) = lay.schedule(variant.tiles.block_m);
        // A paged cache's block table follows the schedule, as wide as the longest sequence
        // needs (forward/io.wgsl reads it from there).
        let pg = match call.keys {
            Keys::Cache(c) => match (c.desc().paging, c.page_table()) {
                (Some(paging), Some(table)) => {
                    let max = c.desc().max_pages() as usize;
                    let width = lay.k_tokens_used().div_ceil(paging.page_size).max(1) as usize;
                    let at = schedule.len() as u32;
                    schedule.extend(table.chunks(max).flat_map(|row| &row[..width]));
                    Pages { max_pages: width as u32, ..c.pages(at) }
                }
                _ => Pages::default(),
            },
            _ => Pages::default(),
        };
        // The schedule is one more storage binding (over the limit, the call is split too).
        let table_bytes = 4 * schedule.len() as u64;
        if table_bytes > l.max_storage_buffer_binding_size {
            return Err(Error::Limit { what: "storage binding size", value: table_bytes, limit: l.max_storage_buffer_binding_size });
        }
        // The grid: (items, heads, z) head by head, or (items x heads, 1, z) with the heads
        // innermost (forward/io.wgsl `work_of`); x * z covers the items, wrapping at the limit.
        let most = l.max_compute_workgroups_per_dimension.max(1);
        let inner = variant.options.heads_inner;
        let linear = if inner {
            n_work.checked_mul(s.heads()).ok_or_else(|| Error::Shape(format!("{n_work} work items x {} heads exceed u32", s.heads())))?
        } else {
            n_work
        };
        let work_x = linear.clamp(1, most);
        let rows_z = linear.div_ceil(work_x).max(1);
        let grid_y = if inner { 1 } else { s.heads() };
        check_grid(l, &[("work items (dispatch x * z)", rows_z as u64), ("heads (dispatch y)", grid_y as u64)])?;
        // Packed tensors have one batch entry: their batch strides never apply.
        let addr = |b: &Binding<'_>, packed: bool| Addr { sb: if packed { 0 } else { b.strides[0] }, ..Addr::of(b, 1) };
        let k_packed = lay.packed && !matches!(call.keys, Keys::Cache(_));
        let params = ForwardParams {
            h: s.heads(),
            group: s.group(),
            d: s.head_dim(),
            batch: s.batch(),
            q: addr(&q, lay.packed),
            k: addr(&k, k_packed),
            v: addr(&v, k_packed),
            o: addr(&o, lay.packed),
            pg,
            rem_off: rows.rem.offset,
            lrem_off: rows.log_rem.offset,
            bias_off: rows.bias.offset,
            flags: rows.flags(call.mask, call.early_exit_eps > 0.0),
            scale,
            log_eps,
            rows_b: if lay.packed { 0 } else { s.heads() * s.seq_len() },
            rows_h: s.seq_len(),
            n_work,
            work_x,
            seq_off: 2 * n_work,
            q_tokens: lay.q_tokens,
            k_tokens: lay.k_tokens,
            ..Default::default()
        };
        let mut bindings = vec![q, k, v, o, rows.rem, rows.log_rem, rows.bias];
        if variant.path.is_cooperative() {
            bindings.extend([k, v]); // the tensor-core kernel's vec4 views of them
        }
        Ok(Prepared { variant, params, bindings, schedule, grid: [work_x, grid_y, rows_z] })
    }
}
