//! Shapes, data types and modes shared by the kernels, the host helpers and the reference.

/// The largest head dim the kernels support.
pub const MAX_HEAD_DIM: u32 = 256;

/// Problem size of one attention call.
///
/// `heads` query heads share `kv_heads` key/value heads (`heads % kv_heads == 0`): equal counts
/// is multi-head attention, `kv_heads == 1` is multi-query, anything between is grouped-query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    /// Batch size `B`.
    pub batch: u32,
    /// Sequence length `T` (queries, keys and values all have `T` tokens).
    pub seq_len: u32,
    /// Query heads `H`.
    pub heads: u32,
    /// Key/value heads `Hkv`.
    pub kv_heads: u32,
    /// Head dim `D`, 1 to [`MAX_HEAD_DIM`].
    pub head_dim: u32,
}

impl Shape {
    /// Multi-head attention shape (`kv_heads == heads`).
    pub fn new(batch: u32, seq_len: u32, heads: u32, head_dim: u32) -> Self {
        Shape { batch, seq_len, heads, kv_heads: heads, head_dim }
    }

    /// The same shape with `kv_heads` key/value heads (grouped-query or multi-query attention).
    pub fn with_kv_heads(self, kv_heads: u32) -> Self {
        Shape { kv_heads, ..self }
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
    /// [`Error::Shape`](crate::Error::Shape), [`Error::HeadDim`](crate::Error::HeadDim) or
    /// [`Error::HeadsNotDivisible`](crate::Error::HeadsNotDivisible).
    pub fn validate(&self) -> crate::Result<()> {
        use crate::Error;
        for (name, v) in [
            ("batch", self.batch),
            ("seq_len", self.seq_len),
            ("heads", self.heads),
            ("kv_heads", self.kv_heads),
        ] {
            if v == 0 {
                return Err(Error::Shape(format!("{name} is 0")));
            }
        }
        if self.head_dim == 0 || self.head_dim > MAX_HEAD_DIM {
            return Err(Error::HeadDim { head_dim: self.head_dim, max: MAX_HEAD_DIM });
        }
        if self.heads % self.kv_heads != 0 {
            return Err(Error::HeadsNotDivisible { heads: self.heads, kv_heads: self.kv_heads });
        }
        Ok(())
    }

    /// The scale the call uses: `scale` if given, else `1 / sqrt(head_dim)`.
    ///
    /// # Errors
    /// [`Error::NonFiniteScale`](crate::Error::NonFiniteScale) for NaN or infinite scales.
    pub fn resolve_scale(&self, scale: Option<f32>) -> crate::Result<f32> {
        let s = scale.unwrap_or(1.0 / (self.head_dim as f32).sqrt());
        if !s.is_finite() {
            return Err(crate::Error::NonFiniteScale(s));
        }
        Ok(s)
    }
}

/// Storage type of `q`, `k`, `v`, `o` and the bias. Arithmetic and the scan are always f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// 32-bit floats.
    F32,
    /// 16-bit floats (needs `Features::SHADER_F16`).
    F16,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 => 2,
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
    /// Element strides `(batch, token, head)` of a contiguous tensor in this layout.
    pub fn strides(self, seq_len: u32, heads: u32, head_dim: u32) -> Strides {
        let (t, h, d) = (seq_len as u64, heads as u64, head_dim as u64);
        match self {
            Layout::Bthd => Strides { batch: t * h * d, token: h * d, head: d },
            Layout::Bhtd => Strides { batch: h * t * d, token: d, head: t * d },
        }
    }

    /// Index of element `(b, t, h, d)` of a contiguous tensor in this layout.
    pub fn index(self, shape_t: u32, heads: u32, head_dim: u32, b: u32, t: u32, h: u32, d: u32) -> usize {
        let s = self.strides(shape_t, heads, head_dim);
        (b as u64 * s.batch + t as u64 * s.token + h as u64 * s.head + d as u64) as usize
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

/// Which scan (and matrix) path the forward kernel takes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Path {
    /// The fastest path the device supports.
    #[default]
    Auto,
    /// Subgroup shuffles for the within-tile scan (needs `Features::SUBGROUP` and a minimum
    /// subgroup size of at least 8).
    Subgroup,
    /// Workgroup shared memory for the scan: runs on every adapter, browsers included.
    SharedMemory,
    /// Cooperative matrices (tensor cores) for both matrix products, f16 only, head dims up
    /// to 128 (needs `Features::EXPERIMENTAL_COOPERATIVE_MATRIX` with 16x16x16 f16 inputs and
    /// f32 accumulators, and subgroups of exactly 32).
    CooperativeMatrix,
}
