//! Shapes, data types and modes shared by the kernels, the host helpers and the reference.

use crate::{Error, Result};

/// The largest head dim the kernels support.
pub const MAX_HEAD_DIM: u32 = 256;

/// Problem size of one attention call: `B` sequences of `T` tokens, `H` query heads over `Hkv`
/// key/value heads, head dim `D`.
///
/// Built by name, so that no two sizes can be swapped silently:
/// ```
/// # use sbattn::Shape;
/// let shape = Shape::new().with_batch(4).with_seq_len(4096).with_heads(32).with_kv_heads(8).with_head_dim(128);
/// assert_eq!((shape.group(), shape.kv_heads()), (4, 8));
/// ```
/// Every size starts at 1; the key/value heads follow the query heads until
/// [`Shape::with_kv_heads`] sets them (equal counts are multi-head attention, one key/value
/// head is multi-query, anything between grouped-query).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    batch: u32,
    seq_len: u32,
    heads: u32,
    kv_heads: Option<u32>,
    head_dim: u32,
}

impl Default for Shape {
    fn default() -> Self {
        Self::new()
    }
}

impl Shape {
    /// One sequence of one token, one head of dim 1: set what differs.
    pub const fn new() -> Self {
        Shape { batch: 1, seq_len: 1, heads: 1, kv_heads: None, head_dim: 1 }
    }

    /// Sets the batch size `B`.
    pub const fn with_batch(self, batch: u32) -> Self {
        Shape { batch, ..self }
    }

    /// Sets the sequence length `T` (queries, keys and values all have `T` tokens).
    pub const fn with_seq_len(self, seq_len: u32) -> Self {
        Shape { seq_len, ..self }
    }

    /// Sets the query heads `H`.
    pub const fn with_heads(self, heads: u32) -> Self {
        Shape { heads, ..self }
    }

    /// Sets the key/value heads `Hkv` (grouped-query or multi-query attention).
    pub const fn with_kv_heads(self, kv_heads: u32) -> Self {
        Shape { kv_heads: Some(kv_heads), ..self }
    }

    /// Sets the head dim `D`, 1 to [`MAX_HEAD_DIM`].
    pub const fn with_head_dim(self, head_dim: u32) -> Self {
        Shape { head_dim, ..self }
    }

    /// Batch size `B`.
    pub const fn batch(&self) -> u32 {
        self.batch
    }

    /// Sequence length `T`.
    pub const fn seq_len(&self) -> u32 {
        self.seq_len
    }

    /// Query heads `H`.
    pub const fn heads(&self) -> u32 {
        self.heads
    }

    /// Key/value heads `Hkv` (the query heads unless set).
    pub const fn kv_heads(&self) -> u32 {
        match self.kv_heads {
            Some(k) => k,
            None => self.heads,
        }
    }

    /// Head dim `D`.
    pub const fn head_dim(&self) -> u32 {
        self.head_dim
    }

    /// Query heads per key/value head, `H / Hkv` (after [`Shape::validate`]).
    pub fn group(&self) -> u32 {
        self.heads / self.kv_heads().max(1)
    }

    /// Rows of the per-row outputs (`rem`, `log rem`): `B * H * T`, saturating at `u64::MAX`
    /// (three `u32` sizes can pass 2^64; a saturated count is refused by every binding of it).
    pub fn rows(&self) -> u64 {
        (self.batch as u64 * self.heads as u64).saturating_mul(self.seq_len as u64)
    }

    /// Floating-point operations of the causal forward pass, `4 * B * H * (T^2 / 2) * D`
    /// (two matrix products over half the score matrix), the figure benchmarks report.
    pub fn forward_flops(&self) -> f64 {
        let t = self.seq_len as f64;
        4.0 * self.batch as f64 * self.heads as f64 * (t * t / 2.0) * self.head_dim as f64
    }

    /// Checks the shape on its own: non-zero sizes, whole head groups, supported head dim.
    ///
    /// # Errors
    /// [`Error::Shape`], [`Error::HeadDim`] or [`Error::HeadsNotDivisible`].
    pub fn validate(&self) -> Result<()> {
        let kv_heads = self.kv_heads();
        for (name, v) in [("batch", self.batch), ("seq_len", self.seq_len), ("heads", self.heads), ("kv_heads", kv_heads)] {
            if v == 0 {
                return Err(Error::Shape(format!("{name} is 0")));
            }
        }
        if self.head_dim == 0 || self.head_dim > MAX_HEAD_DIM {
            return Err(Error::HeadDim { head_dim: self.head_dim, max: MAX_HEAD_DIM });
        }
        if !self.heads.is_multiple_of(kv_heads) {
            return Err(Error::HeadsNotDivisible { heads: self.heads, kv_heads });
        }
        Ok(())
    }

    /// The scale a call uses: `scale` if given, else `1 / sqrt(head_dim)`.
    ///
    /// # Errors
    /// [`Error::NonFiniteScale`] for NaN or infinite scales.
    pub fn resolve_scale(&self, scale: Option<f32>) -> Result<f32> {
        let s = scale.unwrap_or(1.0 / (self.head_dim as f32).sqrt());
        if !s.is_finite() {
            return Err(Error::NonFiniteScale(s));
        }
        Ok(s)
    }
}

/// Storage type of `q`, `k`, `v`, `o` and the bias. Arithmetic and the scan are always f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Dtype {
    /// 32-bit floats.
    F32,
    /// 16-bit floats (needs `Features::SHADER_F16`).
    F16,
}

impl Dtype {
    /// Bytes per element.
    pub const fn size(self) -> u64 {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 => 2,
        }
    }

    /// The WGSL type the kernels store it as.
    pub(crate) const fn wgsl(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
        }
    }
}

/// Which keys a query row sees.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mask {
    /// Row `i` sees keys `j < i` (the default: a token does not attend to itself).
    #[default]
    Strict,
    /// Row `i` sees keys `j <= i` (`attend_current` in the authors' code).
    IncludeCurrent,
}

impl Mask {
    /// Number of keys row `i` sees: `i` (strict) or `i + 1` (current included).
    pub const fn visible(self, i: u32) -> u32 {
        match self {
            Mask::Strict => i,
            Mask::IncludeCurrent => i + 1,
        }
    }
}

/// How a contiguous `[.., D]` tensor's tokens and heads are ordered in memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Layout {
    /// `[B, T, H, D]`: tokens outer, heads inner (the usual activation layout).
    #[default]
    Bthd,
    /// `[B, H, T, D]`: heads outer, tokens inner (the usual KV-cache layout).
    Bhtd,
}

impl Layout {
    /// Element strides `(batch, token, head)` of a contiguous tensor of `tokens` tokens and
    /// `heads` heads of dim `head_dim` in this layout. A stride past `u64` saturates at
    /// `u64::MAX` (no buffer holds such a tensor; binding it fails with [`Error::Stride`]).
    pub const fn strides(self, tokens: u32, heads: u32, head_dim: u32) -> Strides {
        let (t, h, d) = (tokens as u64, heads as u64, head_dim as u64);
        match self {
            Layout::Bthd => Strides { batch: t.saturating_mul(h).saturating_mul(d), token: h * d, head: d },
            Layout::Bhtd => Strides { batch: h.saturating_mul(t).saturating_mul(d), token: d, head: t * d },
        }
    }
}

/// Element strides of a tensor whose last (head-dim) axis is contiguous.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Strides {
    /// Elements between consecutive batch entries.
    pub batch: u64,
    /// Elements between consecutive tokens.
    pub token: u64,
    /// Elements between consecutive heads.
    pub head: u64,
}

impl Strides {
    /// Element index of `(b, t, h, 0)`.
    pub const fn index(&self, b: u32, t: u32, h: u32) -> u64 {
        b as u64 * self.batch + t as u64 * self.token + h as u64 * self.head
    }
}

/// Which kernel a call runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KernelPath {
    /// The fastest path the device supports for the call.
    #[default]
    Auto,
    /// Subgroup shuffles for the within-tile scan (needs `Features::SUBGROUP` and a minimum
    /// subgroup size of at least 8).
    Subgroup,
    /// Workgroup shared memory for the scan: runs on every adapter, browsers included.
    SharedMemory,
    /// Cooperative matrices (tensor cores) for both matrix products of the forward pass; see
    /// [`crate::Capabilities::cooperative_f16`] for what it needs. Decode has no such kernel:
    /// forcing it there is an error.
    CooperativeMatrix,
    /// The cooperative-matrix kernel with its matrix operations emulated in plain WGSL: the same
    /// kernel logic (staging, scan, masking, epilogue) on adapters without cooperative matrices,
    /// for tests (it is slow, and never chosen by [`KernelPath::Auto`]). Needs f16, subgroups,
    /// and workgroup memory for 32-key tiles (head dims up to 96 in 32 KiB).
    EmulatedCooperativeMatrix,
}

impl KernelPath {
    /// Whether this is the cooperative-matrix kernel (on tensor cores or emulated).
    pub const fn is_cooperative(self) -> bool {
        matches!(self, KernelPath::CooperativeMatrix | KernelPath::EmulatedCooperativeMatrix)
    }
}
