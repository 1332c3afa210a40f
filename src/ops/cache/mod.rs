//! The KV cache: K and V per sequence with each sequence's length on the GPU, and the append
//! op that writes new tokens into it (`shaders/cache/append.wgsl`). Decode reads it
//! ([`crate::Attention::decode`]), and so does a forward call on it ([`crate::Keys::Cache`]).
//!
//! A cache is contiguous (every sequence owns `capacity` tokens) or paged ([`Paging`]): K and
//! V are pools of pages of `page_size` tokens, and a block table maps each sequence's `i`-th
//! page of tokens to a page of the pool, as in vLLM. The caller allocates pages
//! ([`KvCache::set_pages`]); the kernels read and write through the table
//! (`shaders/common/pages.wgsl`), clamping every page index to the pool. Tests:
//! `tests/decode.rs`, `tests/paged.rs`.

pub(crate) mod params;

use crate::context::{Attention, Dispatch};
use crate::kernel::consts::APPEND_WORKGROUP;
use crate::kernel::source::{files, Extensions, Part, Recipe};
use crate::kernel::uniform::{Addr, Pages};
use crate::ops::common::{check_dtype, check_grid};
use crate::tensor::{bind_tensor, check_aliasing, Access, Binding, TensorRef};
use crate::{Dtype, Error, Layout, Result, Strides, MAX_HEAD_DIM};
use params::AppendParams;

/// Describes a KV cache to allocate: `[B, Hkv, capacity, D]` ([`Layout::Bhtd`], the default)
/// or `[B, capacity, Hkv, D]` ([`Layout::Bthd`]) for each of K and V.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct KvCacheDesc {
    /// Sequences `B`.
    pub batch: u32,
    /// Key/value heads `Hkv`.
    pub kv_heads: u32,
    /// Head dim `D`, 1 to [`MAX_HEAD_DIM`].
    pub head_dim: u32,
    /// Tokens each sequence can hold.
    pub capacity: u32,
    /// Storage type.
    pub dtype: Dtype,
    /// Memory order of each of K and V (of each page, when paged).
    pub layout: Layout,
    /// The page pool and page size of a paged cache; `None`: contiguous.
    pub paging: Option<Paging>,
}

/// The pages of a paged [`KvCache`]: K and V are each `[num_pages, page_size, Hkv, D]`
/// ([`Layout::Bthd`], what [`KvCacheDesc::with_pages`] sets) or `[num_pages, Hkv, page_size,
/// D]` ([`Layout::Bhtd`]); sequence `b`'s token `t` is slot `t % page_size` of page
/// `table[b][t / page_size]`, with `ceil(capacity / page_size)` table entries per sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Paging {
    /// Tokens per page: a power of two from [`MIN_PAGE_SIZE`] to [`MAX_PAGE_SIZE`].
    pub page_size: u32,
    /// Pages in the pool, shared by all sequences.
    pub num_pages: u32,
}

/// The smallest page of a paged cache, in tokens.
pub const MIN_PAGE_SIZE: u32 = 16;
/// The largest page of a paged cache, in tokens.
pub const MAX_PAGE_SIZE: u32 = 256;
/// A block-table entry that holds no page (every entry, until [`KvCache::set_pages`]).
pub const NO_PAGE: u32 = u32::MAX;

impl KvCacheDesc {
    /// A `[B, Hkv, capacity, D]` cache.
    pub fn new(batch: u32, kv_heads: u32, head_dim: u32, capacity: u32, dtype: Dtype) -> Self {
        KvCacheDesc { batch, kv_heads, head_dim, capacity, dtype, layout: Layout::Bhtd, paging: None }
    }

    /// The same cache paged: a pool of `num_pages` pages of `page_size` tokens, each page
    /// `[page_size, Hkv, D]` ([`Layout::Bthd`]; [`KvCacheDesc::with_layout`] after this
    /// changes it). `capacity` stays the most tokens one sequence may hold.
    pub fn with_pages(self, page_size: u32, num_pages: u32) -> Self {
        KvCacheDesc { paging: Some(Paging { page_size, num_pages }), layout: Layout::Bthd, ..self }
    }

    /// Block-table entries per sequence: `ceil(capacity / page_size)` (0 when contiguous).
    pub fn max_pages(&self) -> u32 {
        self.paging.map_or(0, |p| self.capacity.div_ceil(p.page_size.max(1)))
    }

    /// The same cache in `layout`.
    pub fn with_layout(self, layout: Layout) -> Self {
        KvCacheDesc { layout, ..self }
    }

    /// Bytes of each of K and V when allocated contiguously (saturating at `u64::MAX`: four
    /// `u32` sizes can pass 2^64): `B * capacity` tokens, or the pool's `num_pages *
    /// page_size` when paged.
    pub fn tensor_bytes(&self) -> u64 {
        let [rows, tokens] = self.rows();
        [self.kv_heads as u64, tokens as u64, self.head_dim as u64, self.dtype.size()].into_iter().fold(rows as u64, u64::saturating_mul)
    }

    /// The extent of the batch (or page) and token axes of K and V.
    fn rows(&self) -> [u32; 2] {
        match self.paging {
            Some(p) => [p.num_pages, p.page_size],
            None => [self.batch, self.capacity],
        }
    }

    /// Words of the lengths buffer: the lengths, then the block table.
    fn meta_words(&self) -> u64 {
        self.batch as u64 * (1 + self.max_pages() as u64)
    }

    fn validate(&self, attn: &Attention) -> Result<()> {
        check_dtype(attn.capabilities(), self.dtype)?;
        for (name, v) in [("batch", self.batch), ("kv_heads", self.kv_heads), ("capacity", self.capacity)] {
            if v == 0 {
                return Err(Error::Shape(format!("KV cache {name} is 0")));
            }
        }
        if self.head_dim == 0 || self.head_dim > MAX_HEAD_DIM {
            return Err(Error::HeadDim { head_dim: self.head_dim, max: MAX_HEAD_DIM });
        }
        if let Some(p) = self.paging {
            if !p.page_size.is_power_of_two() || !(MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&p.page_size) {
                let reason = format!("{} is not a power of two from {MIN_PAGE_SIZE} to {MAX_PAGE_SIZE}", p.page_size);
                return Err(Error::InvalidParameter { name: "page_size", reason });
            }
            if p.num_pages == 0 {
                return Err(Error::Shape("KV cache num_pages is 0".into()));
            }
            let l = &attn.capabilities().limits;
            let bytes = 4 * self.meta_words();
            if bytes > l.max_storage_buffer_binding_size {
                return Err(Error::Limit { what: "KV cache block table (bytes)", value: bytes, limit: l.max_storage_buffer_binding_size });
            }
        }
        Ok(())
    }
}

/// An owned strided tensor: a buffer, the element offset of `(0, 0, 0, 0)` and the element
/// strides of the batch, token and head axes (head dim contiguous).
#[derive(Clone, Debug)]
pub struct CacheTensor {
    /// The buffer (needs `BufferUsages::STORAGE`).
    pub buffer: wgpu::Buffer,
    /// Offset of element `(0, 0, 0, 0)`, in elements.
    pub offset: u64,
    /// Element strides; the token axis has `capacity` entries.
    pub strides: Strides,
}

impl CacheTensor {
    /// The tensor as a [`TensorRef`].
    pub fn as_ref(&self) -> TensorRef<'_> {
        TensorRef::strided(&self.buffer, self.strides).at_offset(self.offset)
    }
}

/// The K and V cache of one layer, with each sequence's current length.
///
/// Lengths live in a GPU buffer (`u32` per sequence) that [`Attention::append`] advances and
/// [`Attention::decode`] reads, so steps need no readback. The cache also keeps a host mirror
/// of them, advanced when an append is *recorded*: it is what capacity checks use, so an
/// encoder that is recorded but never submitted leaves the mirror ahead of the GPU (the GPU side
/// then only under-counts, which never reads or writes out of bounds). Fix both with
/// [`KvCache::set_lengths`] in that case.
#[derive(Debug)]
pub struct KvCache {
    desc: KvCacheDesc,
    k: CacheTensor,
    v: CacheTensor,
    /// The lengths, then (paged) the block table: `B * (1 + max_pages)` words.
    lengths: wgpu::Buffer,
    host_lengths: Vec<u32>,
    /// Host mirror of the block table, `[B, max_pages]` (empty when contiguous).
    table: Vec<u32>,
    /// Table entries that hold each page of the pool (empty when contiguous).
    refs: Vec<u32>,
}

impl KvCache {
    /// Allocates a zeroed, empty cache on `attn`'s device (K and V buffers with
    /// `STORAGE | COPY_SRC | COPY_DST`).
    ///
    /// # Errors
    /// [`Error::Shape`] or [`Error::HeadDim`] for a bad description, [`Error::Unsupported`] for
    /// f16 without `SHADER_F16`, [`Error::Limit`] when a buffer would exceed the device's limits.
    pub fn new(attn: &Attention, desc: KvCacheDesc) -> Result<Self> {
        desc.validate(attn)?;
        let limit = attn.capabilities().limits.max_buffer_size;
        let bytes = desc.tensor_bytes();
        if bytes > limit {
            return Err(Error::Limit { what: "KV cache buffer size", value: bytes, limit });
        }
        let strides = desc.layout.strides(desc.rows()[1], desc.kv_heads, desc.head_dim);
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
        let make = |label| -> Result<CacheTensor> { Ok(CacheTensor { buffer: attn.create_buffer(label, bytes, usage)?, offset: 0, strides }) };
        Self::from_buffers(attn, desc, make("sbattn k cache")?, make("sbattn v cache")?)
    }

    /// A cache on the caller's buffers (any strides with a contiguous head dim; K and V must not
    /// overlap), empty. Paged, each tensor is the page pool, its batch stride the page stride.
    ///
    /// # Errors
    /// As [`KvCache::new`], plus every check of a written tensor: buffer usage and size, strides
    /// that would overlap, indices past `u32`, K and V sharing memory.
    pub fn from_buffers(attn: &Attention, desc: KvCacheDesc, k: CacheTensor, v: CacheTensor) -> Result<Self> {
        desc.validate(attn)?;
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC;
        let b = desc.batch as usize;
        let table = vec![NO_PAGE; b * desc.max_pages() as usize];
        let meta: Vec<u32> = std::iter::repeat_n(0, b).chain(table.iter().copied()).collect();
        let cache = KvCache {
            lengths: attn.create_buffer_with("sbattn cache lengths", bytemuck::cast_slice(&meta), usage)?,
            desc,
            k,
            v,
            host_lengths: vec![0; b],
            table,
            refs: vec![0; desc.paging.map_or(0, |p| p.num_pages as usize)],
        };
        let (kb, vb) = cache.bindings(&attn.capabilities().limits)?;
        check_aliasing(&[(&kb, Access::Write), (&vb, Access::Write)])?;
        Ok(cache)
    }

    /// The description.
    pub fn desc(&self) -> &KvCacheDesc {
        &self.desc
    }

    /// The host mirror of each sequence's length (tokens held), as of the last recorded append.
    pub fn lengths(&self) -> &[u32] {
        &self.host_lengths
    }

    /// The GPU buffer of lengths, `[B]` `u32`; a paged cache's block table `[B, max_pages]`
    /// follows them (word `B` on). The kernels clamp whatever they read from it, so a write
    /// behind the cache's back can give wrong results but never an access out of bounds.
    pub fn lengths_buffer(&self) -> &wgpu::Buffer {
        &self.lengths
    }

    /// The host mirror of the block table, `[B, max_pages]` ([`NO_PAGE`] where unset); `None`
    /// for a contiguous cache.
    pub fn page_table(&self) -> Option<&[u32]> {
        self.desc.paging.map(|_| &self.table[..])
    }

    /// The key cache: `capacity` tokens per sequence, or the page pool.
    pub fn k(&self) -> TensorRef<'_> {
        self.k.as_ref()
    }

    /// The value cache: `capacity` tokens per sequence, or the page pool.
    pub fn v(&self) -> TensorRef<'_> {
        self.v.as_ref()
    }

    /// The kernels' paging parameters, the table at word `table` of its binding.
    pub(crate) fn pages(&self, table: u32) -> Pages {
        match self.desc.paging {
            Some(p) => Pages { shift: p.page_size.trailing_zeros(), max_pages: self.desc.max_pages(), num_pages: p.num_pages, table },
            None => Pages::default(),
        }
    }

    /// Records setting sequence `sequence`'s pages: its tokens `i * page_size ..` go to page
    /// `pages[i]` of the pool (entries past `pages.len()` become [`NO_PAGE`]); `attn` is the
    /// context the cache was made on. Pages may be shared between sequences (a common prefix):
    /// such pages can be read but not appended to.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a contiguous cache; [`Error::InvalidParameter`] for a
    /// sequence past the batch, more than `max_pages` pages, a page past the pool, or too few
    /// pages for the tokens the sequence holds; device errors as [`Attention::create_buffer`].
    pub fn set_pages(&mut self, attn: &Attention, encoder: &mut wgpu::CommandEncoder, sequence: u32, pages: &[u32]) -> Result<()> {
        let Some(pg) = self.desc.paging else { return Err(Error::Unsupported("set_pages on a contiguous KV cache".into())) };
        let max = self.desc.max_pages() as usize;
        let bad = |reason: String| Err(Error::InvalidParameter { name: "pages", reason });
        if sequence >= self.desc.batch {
            return bad(format!("sequence {sequence} of a batch of {}", self.desc.batch));
        }
        if pages.len() > max {
            return bad(format!("{} pages for a sequence of at most {max}", pages.len()));
        }
        if let Some(i) = pages.iter().position(|&p| p >= pg.num_pages) {
            return bad(format!("entry {i} is page {}, past the pool of {}", pages[i], pg.num_pages));
        }
        let len = self.host_lengths[sequence as usize];
        if (pages.len() as u64) * (pg.page_size as u64) < len as u64 {
            return bad(format!("{} pages of {} tokens cannot hold the {len} tokens sequence {sequence} holds", pages.len(), pg.page_size));
        }
        let row: Vec<u32> = pages.iter().copied().chain(std::iter::repeat_n(NO_PAGE, max - pages.len())).collect();
        let src = attn.create_buffer_with("sbattn set pages", bytemuck::cast_slice(&row), wgpu::BufferUsages::COPY_SRC)?;
        let at = (self.desc.batch as u64 + sequence as u64 * max as u64) * 4;
        attn.guarded(|| {
            encoder.copy_buffer_to_buffer(&src, 0, &self.lengths, at, 4 * max as u64);
            Ok(())
        })?;
        let old = &mut self.table[sequence as usize * max..][..max];
        for &p in old.iter().filter(|&&p| p != NO_PAGE) {
            self.refs[p as usize] -= 1;
        }
        for &p in pages {
            self.refs[p as usize] += 1;
        }
        old.copy_from_slice(&row);
        Ok(())
    }

    /// Checks that appending `counts[b]` tokens to each sequence `b` writes only pages of its
    /// own (a no-op for a contiguous cache).
    fn check_append_pages(&self, counts: &[u32]) -> Result<()> {
        let Some(pg) = self.desc.paging else { return Ok(()) };
        let max = self.desc.max_pages() as usize;
        for (s, (&c, &len)) in counts.iter().zip(&self.host_lengths).enumerate().filter(|(_, (c, _))| **c > 0) {
            let rows = len / pg.page_size..=(len + c - 1) / pg.page_size;
            for r in rows {
                let page = self.table[s * max + r as usize];
                let reason = if page == NO_PAGE {
                    format!("sequence {s} has no page for its tokens from {}: set_pages first", r * pg.page_size)
                } else if self.refs[page as usize] > 1 {
                    format!("page {page} (sequence {s}'s page {r}) is in {} table entries: appending would change the others; copy it first", self.refs[page as usize])
                } else {
                    continue;
                };
                return Err(Error::InvalidParameter { name: "pages", reason });
            }
        }
        Ok(())
    }

    /// The bindings of K and V (validated as written tensors: appends write them).
    pub(crate) fn bindings(&self, limits: &wgpu::Limits) -> Result<(Binding<'_>, Binding<'_>)> {
        Ok((bind_cache("k cache", &self.desc, &self.k, limits)?, bind_cache("v cache", &self.desc, &self.v, limits)?))
    }

    /// Records setting every sequence's length (`0` empties it; tokens past a length are
    /// ignored, not cleared) and sets the host mirror; `attn` is the context the cache was
    /// made on.
    ///
    /// # Errors
    /// [`Error::HostData`] when `lengths` does not have one entry per sequence,
    /// [`Error::CacheOverflow`] for a length past the capacity, [`Error::InvalidParameter`]
    /// when a paged cache's sequence would hold tokens on no page, device errors as
    /// [`Attention::create_buffer`].
    pub fn set_lengths(&mut self, attn: &Attention, encoder: &mut wgpu::CommandEncoder, lengths: &[u32]) -> Result<()> {
        let b = self.desc.batch as usize;
        if lengths.len() != b {
            return Err(Error::HostData { what: "lengths", expected: b, got: lengths.len() });
        }
        if let Some((s, &len)) = lengths.iter().enumerate().find(|(_, l)| **l > self.desc.capacity) {
            return Err(Error::CacheOverflow { sequence: s as u32, length: 0, appending: len, capacity: self.desc.capacity });
        }
        if let Some(pg) = self.desc.paging {
            let max = self.desc.max_pages() as usize;
            for (s, &len) in lengths.iter().enumerate() {
                if let Some(r) = (0..len.div_ceil(pg.page_size) as usize).find(|&r| self.table[s * max + r] == NO_PAGE) {
                    let reason = format!("sequence {s} has no page for its tokens from {}: set_pages first", r as u32 * pg.page_size);
                    return Err(Error::InvalidParameter { name: "lengths", reason });
                }
            }
        }
        let src = attn.create_buffer_with("sbattn set lengths", bytemuck::cast_slice(lengths), wgpu::BufferUsages::COPY_SRC)?;
        attn.guarded(|| {
            encoder.copy_buffer_to_buffer(&src, 0, &self.lengths, 0, 4 * b as u64);
            Ok(())
        })?;
        self.host_lengths.copy_from_slice(lengths);
        Ok(())
    }
}

/// The binding of a cache tensor (validated as written: appends write it).
fn bind_cache<'a>(name: &'static str, d: &KvCacheDesc, t: &'a CacheTensor, limits: &wgpu::Limits) -> Result<Binding<'a>> {
    let [rows, tokens] = d.rows();
    bind_tensor(name, &t.as_ref(), [rows, tokens, d.kv_heads], d.head_dim, d.dtype.size(), true, limits)
}

/// New tokens' keys and values to append to a [`KvCache`].
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Append<'a> {
    /// Keys, `[B, tokens, Hkv, D]` in the cache's dtype (any strides, head dim contiguous).
    pub k: TensorRef<'a>,
    /// Values, same shape.
    pub v: TensorRef<'a>,
    /// Tokens per sequence in `k` and `v`.
    pub tokens: u32,
    /// Tokens to take per sequence (`<= tokens`, one entry per sequence): a ragged batch, such
    /// as prompts of different lengths. `None` takes all `tokens` for every sequence.
    pub counts: Option<&'a [u32]>,
}

impl<'a> Append<'a> {
    /// Appends all `tokens` of `k` and `v` to every sequence.
    pub fn new(k: TensorRef<'a>, v: TensorRef<'a>, tokens: u32) -> Self {
        Append { k, v, tokens, counts: None }
    }

    /// Takes `counts[b]` tokens for sequence `b`.
    pub fn with_counts(self, counts: &'a [u32]) -> Self {
        Append { counts: Some(counts), ..self }
    }
}

/// Storage bindings of both append entry points: counts read; lengths written; new k, v read;
/// k, v cache written.
const BINDINGS: &[Access] = &[Access::Read, Access::Write, Access::Read, Access::Read, Access::Write, Access::Write];

/// The recipe of append entry point `entry` (`append` or `advance`) for `dtype`.
pub(crate) fn recipe(dtype: Dtype, entry: &'static str) -> Recipe {
    Recipe {
        name: "cache/append",
        dtype,
        parts: vec![Part(files::ADDR), Part(files::PAGES), Part(files::CACHE_APPEND)],
        consts: vec![("AW", APPEND_WORKGROUP)],
        // Contiguous unless the cache is paged (`Recipe::with_paging`).
        overrides: vec![("PAGED", 0)],
        entry,
        bindings: BINDINGS,
        extensions: Extensions::default(),
        zero_workgroup_memory: false,
        trusted: true,
    }
}

/// Every append kernel, for offline validation.
pub(crate) fn all_recipes() -> Vec<Recipe> {
    [Dtype::F32, Dtype::F16].into_iter().flat_map(|d| [recipe(d, "append"), recipe(d, "advance")]).collect()
}

impl Attention {
    /// Validates `call` and records its two dispatches (copy, then length update) into
    /// `encoder`; advances the cache's host mirror of the lengths.
    ///
    /// Nothing is recorded (and the mirror is unchanged) when an error is returned.
    ///
    /// # Errors
    /// [`Error::CacheOverflow`] when a sequence would pass the capacity; [`Error::HostData`]
    /// for `counts` of the wrong length; [`Error::InvalidParameter`] when a paged cache's new
    /// tokens would go to an unset page or to a page that another table entry holds too; [`Error::Shape`] for zero tokens or a count above
    /// `tokens`; tensor errors (usage, size, strides, sharing memory with the cache) as in
    /// [`Attention::forward`].
    pub fn append(&self, encoder: &mut wgpu::CommandEncoder, cache: &mut KvCache, call: &Append<'_>) -> Result<()> {
        self.check_alive()?;
        let desc = cache.desc;
        let n = call.tokens;
        if n == 0 {
            return Err(Error::Shape("append of 0 tokens".into()));
        }
        let counts: Vec<u32> = match call.counts {
            Some(c) if c.len() != desc.batch as usize => {
                return Err(Error::HostData { what: "counts", expected: desc.batch as usize, got: c.len() })
            }
            Some(c) => c.to_vec(),
            None => vec![n; desc.batch as usize],
        };
        for (s, (&c, &len)) in counts.iter().zip(&cache.host_lengths).enumerate() {
            if c > n {
                return Err(Error::Shape(format!("counts[{s}] = {c} is more than the {n} tokens given")));
            }
            if len as u64 + c as u64 > desc.capacity as u64 {
                return Err(Error::CacheOverflow { sequence: s as u32, length: len, appending: c, capacity: desc.capacity });
            }
        }
        cache.check_append_pages(&counts)?;
        let l = &self.capabilities().limits;
        let dims = [desc.batch, n, desc.kv_heads];
        let kn = bind_tensor("k", &call.k, dims, desc.head_dim, desc.dtype.size(), false, l)?;
        let vn = bind_tensor("v", &call.v, dims, desc.head_dim, desc.dtype.size(), false, l)?;
        let (kc, vc) = cache.bindings(l)?;
        check_aliasing(&[(&kn, Access::Read), (&vn, Access::Read), (&kc, Access::Write), (&vc, Access::Write)])?;
        check_grid(l, &[("kv heads (append dispatch y)", desc.kv_heads as u64), ("batch (append dispatch z)", desc.batch as u64)])?;
        let counts_buf = self.create_buffer_with("sbattn kv append counts", bytemuck::cast_slice(&counts), wgpu::BufferUsages::STORAGE)?;
        self.guarded(|| self.record_append(encoder, cache, desc, n, [kn, vn, kc, vc], &counts_buf))?;
        for (len, c) in cache.host_lengths.iter_mut().zip(&counts) {
            *len += c;
        }
        Ok(())
    }

    fn record_append(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        cache: &KvCache,
        desc: KvCacheDesc,
        n: u32,
        [kn, vn, kc, vc]: [Binding<'_>; 4],
        counts_buf: &wgpu::Buffer,
    ) -> Result<()> {
        let l = &self.capabilities().limits;
        let paged = desc.paging.is_some();
        let append = self.kernel(&recipe(desc.dtype, "append").with_paging(paged))?;
        let advance = self.kernel(&recipe(desc.dtype, "advance").with_paging(paged))?;
        let params = AppendParams {
            n,
            batch: desc.batch,
            d: desc.head_dim,
            capacity: desc.capacity,
            kn: Addr::of(&kn, 1),
            vn: Addr::of(&vn, 1),
            kc: Addr::of(&kc, 1),
            vc: Addr::of(&vc, 1),
            pg: cache.pages(desc.batch),
        };
        let bindings = vec![
            Binding::whole("counts", counts_buf),
            Binding::whole("lengths", &cache.lengths),
            kn,
            vn,
            kc,
            vc,
        ];
        let grid_x = n.min(l.max_compute_workgroups_per_dimension);
        let dispatches = [
            Dispatch { kernel: append, params: self.params(&params), bindings: bindings.clone(), grid: [grid_x, desc.kv_heads, desc.batch] },
            Dispatch { kernel: advance, params: self.params(&params), bindings, grid: [desc.batch.div_ceil(APPEND_WORKGROUP), 1, 1] },
        ];
        self.record(encoder, "sbattn kv append", &dispatches);
        Ok(())
    }
}
