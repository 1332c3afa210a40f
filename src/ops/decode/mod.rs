//! The decode op: a few new tokens per sequence against a KV cache, with the keys split into
//! chunks that run in parallel (split-K) and merge nearest-first (docs/ALGORITHM.md, "Decode
//! and split-K").
//!
//! Per layer and step, record into your encoder:
//! 1. [`Attention::append`] the new tokens' `k` and `v` into the layer's [`KvCache`] (which
//!    advances the per-sequence lengths held on the GPU);
//! 2. [`Attention::decode`] the new queries: query `i` of `n` is token `len - n + i` of its
//!    sequence and sees the keys before it (and itself with [`Mask::IncludeCurrent`]).
//!
//! Nothing is read back between steps. The cache keeps a host-side mirror of the lengths (the
//! host knows how many tokens it appended) to reject overflows before anything is encoded.
//!
//! ```no_run
//! # fn main() -> Result<(), sbattn::Error> {
//! use sbattn::{Append, Attention, Decode, Dtype, KvCache, KvCacheDesc, TensorRef};
//! let attn = Attention::with_default_adapter_blocking()?;
//! let dev = attn.device();
//! let (b, h, hkv, d) = (2, 32, 8, 128);
//! let mut cache = KvCache::new(&attn, KvCacheDesc::new(b, hkv, d, 4096, Dtype::F16))?;
//! let buffer = |elems: u32| dev.create_buffer(&wgpu::BufferDescriptor {
//!     label: None, size: 2 * elems as u64, usage: wgpu::BufferUsages::STORAGE, mapped_at_creation: false,
//! });
//! // One new token per sequence: [B, 1, heads, D] tensors written by the layer's projections.
//! let (q, k, v, o) = (buffer(b * h * d), buffer(b * hkv * d), buffer(b * hkv * d), buffer(b * h * d));
//! let mut enc = dev.create_command_encoder(&Default::default());
//! attn.append(&mut enc, &mut cache, &Append::new(TensorRef::bthd(&k), TensorRef::bthd(&v), 1))?;
//! attn.decode(&mut enc, &Decode::new(&cache, h, 1, TensorRef::bthd(&q), TensorRef::bthd(&o)))?;
//! attn.queue().submit([enc.finish()]);
//! # Ok(()) }
//! ```
//!
//! Kernels: `shaders/decode/partial.wgsl` (one workgroup per chunk x kv head x sequence: the kv
//! head's whole query group shares each K and V load; each key slot loads several keys per step
//! before using any), with one of `load_vec8.wgsl` (16-byte loads of f16), `load_vec4.wgsl` or
//! `load_scalar.wgsl` and one of `reduce_subgroup.wgsl` or `reduce_shared.wgsl`; and
//! `shaders/decode/merge.wgsl` (one workgroup per query row, the chunks spread over its
//! invocations). [`plan::choose_variant`] and [`plan::choose_splits`] pick the kernel and the
//! grid; [`Decode::tuning`] forces them. Tests: `tests/decode.rs`.

pub(crate) mod params;
pub mod partial;
pub mod plan;

use crate::context::{Attention, Dispatch};
use crate::kernel::uniform::Addr;
use crate::ops::cache::KvCache;
use crate::ops::common::{check_grid, early_exit, Remainder, RowOutputs};
use crate::tensor::{bind_tensor, check_aliasing, Access, Binding, BufferRef, TensorRef};
use crate::{Error, KernelPath, Mask, Result, Shape};
use params::{DecodeParams, MergeParams};
use plan::{DecodePlan, DecodeTuning, Load, MAX_SPLITS};

/// The most new tokens (queries) per sequence one [`Decode`] call takes (speculative decoding).
pub const MAX_NEW_TOKENS: u32 = 16;

/// One decode call: `new_tokens` queries per sequence against a [`KvCache`] that already holds
/// their keys and values (append first).
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Decode<'a> {
    /// The layer's cache.
    pub cache: &'a KvCache,
    /// Query heads `H` (a multiple of the cache's kv heads).
    pub heads: u32,
    /// Queries per sequence, `1..=MAX_NEW_TOKENS`: the last `new_tokens` tokens of each.
    pub new_tokens: u32,
    /// Queries, `[B, new_tokens, H, D]`, cache dtype.
    pub q: TensorRef<'a>,
    /// Output, same shape; must not share a buffer with `q`, the cache or the bias.
    pub o: TensorRef<'a>,
    /// Which keys a query sees ([`Mask::Strict`]: the tokens before it).
    pub mask: Mask,
    /// Logit scale; `None` is `1 / sqrt(head_dim)`.
    pub scale: Option<f32>,
    /// Remainder handling as in the forward pass: `Return` writes `[B, H, new_tokens]` f32,
    /// `AddToValue` adds `rem * v` of the query's own token, `AddBias` takes `[H, D]`.
    pub remainder: Remainder<'a>,
    /// Where to write `log rem` per query, `[B, H, new_tokens]` f32.
    pub log_rem: Option<BufferRef<'a>>,
    /// Lane reduction path ([`KernelPath::Auto`] unless testing; forcing
    /// [`KernelPath::CooperativeMatrix`] is an error: decode has no tensor-core kernel).
    pub path: KernelPath,
    /// Early exit: within each key slot of each chunk, once every query's stick left (counted
    /// from the slot's right edge) is below this, the keys further left are skipped. Each
    /// skipped weight is below `eps`, so `o` moves by at most `eps * sum |v_j|` over them; `rem`
    /// and `log_rem` then only bound the true remainder from above. `0.0` (the default) walks
    /// every key.
    pub early_exit_eps: f32,
    /// Kernel and split choices forced, for tests and tuning.
    pub tuning: DecodeTuning,
}

impl<'a> Decode<'a> {
    /// A call with the defaults: strict mask, `1/sqrt(D)` scale, remainder discarded, no
    /// `log_rem`, automatic path and split, no early exit.
    pub fn new(cache: &'a KvCache, heads: u32, new_tokens: u32, q: TensorRef<'a>, o: TensorRef<'a>) -> Self {
        Decode {
            cache,
            heads,
            new_tokens,
            q,
            o,
            mask: Mask::Strict,
            scale: None,
            remainder: Remainder::Discard,
            log_rem: None,
            path: KernelPath::Auto,
            early_exit_eps: 0.0,
            tuning: DecodeTuning::default(),
        }
    }

    /// Sets the mask.
    pub fn with_mask(self, mask: Mask) -> Self {
        Decode { mask, ..self }
    }

    /// Sets the logit scale (`None`: `1 / sqrt(head_dim)`).
    pub fn with_scale(self, scale: Option<f32>) -> Self {
        Decode { scale, ..self }
    }

    /// Sets the remainder handling.
    pub fn with_remainder(self, remainder: Remainder<'a>) -> Self {
        Decode { remainder, ..self }
    }

    /// Writes `log rem` per query into `log_rem`.
    pub fn with_log_rem(self, log_rem: BufferRef<'a>) -> Self {
        Decode { log_rem: Some(log_rem), ..self }
    }

    /// Forces a lane-reduction path.
    pub fn with_path(self, path: KernelPath) -> Self {
        Decode { path, ..self }
    }

    /// Sets the early-exit threshold ([`Decode::early_exit_eps`]).
    pub fn with_early_exit(self, eps: f32) -> Self {
        Decode { early_exit_eps: eps, ..self }
    }

    /// Forces kernel choices.
    pub fn with_tuning(self, tuning: DecodeTuning) -> Self {
        Decode { tuning, ..self }
    }
}

/// A validated decode call: plan, parameters and bindings.
struct Prepared<'a> {
    plan: DecodePlan,
    decode: DecodeParams,
    merge: MergeParams,
    /// q, k cache, v cache, lengths.
    inputs: [Binding<'a>; 4],
    /// o, rem, log_rem, bias.
    outputs: [Binding<'a>; 4],
    /// Bytes of the partial outputs and of the partial logs.
    scratch: (u64, u64),
    /// Merge grid.
    merge_grid: [u32; 3],
}

impl Attention {
    /// How `call` would run (kernel, splits, grid), after every check [`Attention::decode`]
    /// makes.
    ///
    /// # Errors
    /// As [`Attention::decode`].
    pub fn decode_plan(&self, call: &Decode<'_>) -> Result<DecodePlan> {
        Ok(self.prepare_decode(call, 0)?.plan)
    }

    /// Validates `call` and records its two dispatches (partial outputs per chunk, then the
    /// merge) into `encoder`.
    ///
    /// Nothing is recorded when an error is returned. Calls for many layers may share one
    /// encoder and one submit.
    ///
    /// # Errors
    /// [`Error::Shape`] for `new_tokens` outside `1..=MAX_NEW_TOKENS` or a sequence holding
    /// fewer tokens than that; [`Error::HeadsNotDivisible`]; [`Error::NonFiniteScale`];
    /// [`Error::InvalidParameter`] for an early-exit threshold outside `[0, 1)` or bad forced
    /// splits or lanes; tensor errors (usage, size, strides, aliasing) as in
    /// [`Attention::forward`]; [`Error::Unsupported`] and [`Error::Limit`] for what the device
    /// cannot do.
    pub fn decode(&self, encoder: &mut wgpu::CommandEncoder, call: &Decode<'_>) -> Result<()> {
        self.check_alive()?;
        let prep = self.prepare_decode(call, 0)?;
        self.guarded(|| self.record_decode(encoder, call, prep, None))
    }

    /// Records the two dispatches; with `target` (partial o, partial log), the merge writes the
    /// call's partial result there (`FLAG_PARTIAL_OUT`, parameters already set) instead of
    /// finishing the rows.
    fn record_decode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        call: &Decode<'_>,
        prep: Prepared<'_>,
        target: Option<[Binding<'_>; 2]>,
    ) -> Result<()> {
        let dtype = call.cache.desc().dtype;
        let paged = call.cache.desc().paging.is_some();
        let partial = self.kernel(&prep.plan.variant.recipe().with_paging(paged))?;
        let merge = self.kernel(&plan::merge_recipe(dtype).with_paging(paged))?;
        let o_part = self.scratch("sbattn decode partial o", prep.scratch.0)?;
        let s_part = self.scratch("sbattn decode partial log", prep.scratch.1)?;
        // Bound to what this call uses, not whole: the scratch buffers grow by doubling (up to
        // the largest buffer) and may have outgrown the binding size limit of the device.
        let part = |name, buffer, size| Binding { name, buffer, start: 0, size, offset: 0, strides: [0; 3] };
        let (o_part, s_part) = (part("partial o", &o_part, prep.scratch.0), part("partial log", &s_part, prep.scratch.1));
        let [q, k, v, lengths] = prep.inputs;
        let [o, rem, log_rem, bias] = prep.outputs;
        let [po, ps] = target.unwrap_or_else(|| [self.unused().write(2), self.unused().write(3)]);
        let dispatches = [
            Dispatch {
                kernel: partial,
                params: self.params(&prep.decode),
                bindings: vec![q, k, v, lengths, o_part, s_part],
                grid: prep.plan.workgroups,
            },
            Dispatch {
                kernel: merge,
                params: self.params(&prep.merge),
                bindings: vec![o_part, s_part, lengths, v, o, rem, log_rem, bias, po, ps],
                grid: prep.merge_grid,
            },
        ];
        self.record(encoder, "sbattn decode", &dispatches);
        Ok(())
    }

    /// All validation of a decode call whose sequences go on for `later` tokens after the
    /// cache's last (0 but for a partial result over older keys, partial.rs).
    fn prepare_decode<'a>(&'a self, call: &Decode<'a>, later: u32) -> Result<Prepared<'a>> {
        let cache = call.cache;
        let desc = *cache.desc();
        let n = call.new_tokens;
        if n == 0 || n > MAX_NEW_TOKENS {
            return Err(Error::Shape(format!("new_tokens {n} is outside 1..={MAX_NEW_TOKENS}")));
        }
        let s = Shape::new()
            .with_batch(desc.batch)
            .with_seq_len(n)
            .with_heads(call.heads)
            .with_kv_heads(desc.kv_heads)
            .with_head_dim(desc.head_dim);
        s.validate()?;
        let scale = s.resolve_scale(call.scale)?;
        let log_eps = early_exit(call.early_exit_eps)?;
        let caps = self.capabilities();
        let l = &caps.limits;
        let most = MAX_SPLITS.min(l.max_compute_workgroups_per_dimension);
        if let Some(sp) = call.tuning.splits.filter(|sp| !(1..=most).contains(sp)) {
            return Err(Error::InvalidParameter { name: "splits", reason: format!("{sp} is not in 1..={most}") });
        }
        if let Some((b, &len)) = cache.lengths().iter().enumerate().find(|(_, l)| (**l as u64) + (later as u64) < n as u64) {
            return Err(Error::Shape(format!(
                "sequence {b} holds {len} tokens, fewer than the {n} queries: append their keys and values first"
            )));
        }
        if desc.capacity.checked_add(later).is_none() {
            return Err(Error::InvalidParameter { name: "later", reason: format!("{later} tokens after a cache of {} overflow u32", desc.capacity) });
        }
        let (es, d) = (desc.dtype.size(), desc.head_dim as u64);
        let dims = [s.batch(), n, s.heads()];
        let q = bind_tensor("q", &call.q, dims, s.head_dim(), es, false, l)?;
        let o = bind_tensor("o", &call.o, dims, s.head_dim(), es, true, l)?;
        let (k, v) = cache.bindings(l)?;
        let rows = RowOutputs::bind(&call.remainder, call.log_rem.as_ref(), self.unused(), s.rows(), s.heads() as u64 * d, es, l)?;
        // Outputs must not meet each other or any input (the cache included: the merge reads
        // the value cache, and writing into either cache would corrupt it).
        let mut used = vec![(&q, Access::Read), (&k, Access::Read), (&v, Access::Read), (&o, Access::Write)];
        used.extend(rows.used());
        check_aliasing(&used)?;
        // Loads may be as wide as the largest power of two (up to 8) dividing the head dim and
        // every element offset and stride of both caches.
        let bits = [k.offset, v.offset, desc.head_dim].into_iter().chain(k.strides).chain(v.strides).fold(0, |a, x| a | x);
        let widest = Load::widest(desc.dtype, 1 << bits.trailing_zeros().min(3));
        let group = s.group();
        let rows_needed = group.saturating_mul(n);
        let variant = plan::choose_variant(caps, desc.dtype, desc.head_dim, rows_needed, widest, call.path, &call.tuning)?;
        let row_blocks = rows_needed.div_ceil(variant.rows);
        let ac = (call.mask == Mask::IncludeCurrent) as u32;
        // Keys the last query of each sequence sees (as the kernel computes them).
        let max_keys = cache.lengths().iter().map(|&len| (len + later - 1 + ac).min(len)).max().unwrap_or(0);
        let base = s.batch().saturating_mul(s.kv_heads()).saturating_mul(row_blocks);
        let splits = call.tuning.splits.unwrap_or_else(|| plan::choose_splits(caps, base, max_keys, &variant));
        let y = s.kv_heads() as u64 * row_blocks as u64;
        check_grid(
            l,
            &[
                ("kv heads x row blocks (dispatch y)", y),
                ("batch (dispatch z)", s.batch() as u64),
                ("heads x new tokens (merge dispatch x)", s.heads() as u64 * n as u64),
            ],
        )?;
        let dp4 = variant.row_vec4s();
        let o_vec4s = s.rows() * splits as u64 * dp4 as u64;
        let scratch = (16 * o_vec4s, 4 * s.rows() * splits as u64);
        let max_bind = l.max_storage_buffer_binding_size.min(l.max_buffer_size);
        if scratch.0 > max_bind || o_vec4s > u32::MAX as u64 {
            return Err(Error::Limit { what: "decode partial outputs (bytes)", value: scratch.0, limit: max_bind });
        }
        let unit = variant.load.elements();
        let flags = rows.flags(call.mask, call.early_exit_eps > 0.0);
        let decode = DecodeParams {
            h: s.heads(),
            group,
            n,
            d: s.head_dim(),
            rows: rows_needed,
            row_blocks,
            splits,
            flags,
            q: Addr::of(&q, 1),
            k: Addr::of(&k, unit),
            v: Addr::of(&v, unit),
            scale,
            log_eps,
            capacity: desc.capacity,
            later,
            pg: cache.pages(desc.batch),
        };
        let merge = MergeParams {
            h: s.heads(),
            n,
            d: s.head_dim(),
            splits,
            dp4,
            group,
            flags,
            capacity: desc.capacity,
            o: Addr::of(&o, 1),
            v: Addr::of(&v, 1),
            rem_off: rows.rem.offset,
            lrem_off: rows.log_rem.offset,
            bias_off: rows.bias.offset,
            cw: s.head_dim().div_ceil(4).next_power_of_two().min(crate::kernel::consts::WORKGROUP),
            parts: 1,
            part: 0,
            po_off: 0,
            ps_off: 0,
            pg: cache.pages(desc.batch),
        };
        let plan = DecodePlan { variant, splits, row_blocks, workgroups: [splits, y as u32, s.batch()] };
        Ok(Prepared {
            plan,
            decode,
            merge,
            inputs: [q, k, v, Binding::whole("lengths", cache.lengths_buffer())],
            outputs: [o, rows.rem, rows.log_rem, rows.bias],
            scratch,
            merge_grid: [s.heads() * n, s.batch(), 1],
        })
    }
}
