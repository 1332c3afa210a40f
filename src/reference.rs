//! The definition: stick-breaking attention in double precision, straight from
//! `ALGORITHM.md`, O(T^2 D). Every GPU test checks against it.

use crate::{Error, HostRemainder, Layout, Mask, Result, Shape};

/// Output of the reference forward pass.
#[derive(Clone, Debug)]
pub struct Output {
    /// `o`, in the layout of the inputs, remainder term included as requested.
    pub o: Vec<f64>,
    /// `rem_i = prod_j (1 - beta_ij)`, `[B, H, T]`.
    pub rem: Vec<f64>,
    /// `log rem_i`, `[B, H, T]` (the final carry of the kernel).
    pub log_rem: Vec<f64>,
}

/// `softplus(x) = log(1 + e^x)`, never overflowing.
pub fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

fn check_len(what: &'static str, data: &[f32], expected: usize) -> Result<()> {
    if data.len() != expected {
        return Err(Error::HostData { what, expected, got: data.len() });
    }
    Ok(())
}

/// Checks host tensor lengths for `shape` in `layout` (`q` has `heads`, `k` and `v` `kv_heads`).
pub(crate) fn check_inputs(shape: &Shape, q: &[f32], k: &[f32], v: &[f32]) -> Result<()> {
    shape.validate()?;
    let (b, t, d) = (shape.batch as usize, shape.seq_len as usize, shape.head_dim as usize);
    check_len("q", q, b * t * shape.heads as usize * d)?;
    check_len("k", k, b * t * shape.kv_heads as usize * d)?;
    check_len("v", v, b * t * shape.kv_heads as usize * d)
}

struct Ctx<'a> {
    shape: Shape,
    layout: Layout,
    q: &'a [f32],
    k: &'a [f32],
    scale: f64,
}

impl Ctx<'_> {
    fn q_at(&self, b: u32, t: u32, h: u32) -> usize {
        self.layout.index(self.shape.seq_len, self.shape.heads, self.shape.head_dim, b, t, h, 0)
    }
    fn kv_at(&self, b: u32, t: u32, hk: u32) -> usize {
        self.layout.index(self.shape.seq_len, self.shape.kv_heads, self.shape.head_dim, b, t, hk, 0)
    }
    fn logit(&self, b: u32, h: u32, i: u32, j: u32) -> f64 {
        let d = self.shape.head_dim as usize;
        let hk = h / (self.shape.heads / self.shape.kv_heads);
        let (qi, kj) = (self.q_at(b, i, h), self.kv_at(b, j, hk));
        let dot: f64 = (0..d).map(|x| self.q[qi + x] as f64 * self.k[kj + x] as f64).sum();
        self.scale * dot
    }
}

/// Number of keys row `i` sees: `i` (strict) or `i + 1` (current included).
pub fn visible(i: u32, mask: Mask) -> u32 {
    match mask {
        Mask::Strict => i,
        Mask::IncludeCurrent => i + 1,
    }
}

/// The forward pass. `q` is `[B, T, H, D]` or `[B, H, T, D]` per `layout`; `k`, `v` likewise
/// with `kv_heads`. `scale` defaults to `1/sqrt(D)`.
///
/// # Errors
/// Shape errors as in [`Shape::validate`], wrong slice lengths, non-finite scale.
pub fn forward(
    shape: &Shape,
    layout: Layout,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: Mask,
    scale: Option<f32>,
    remainder: &HostRemainder<'_>,
) -> Result<Output> {
    check_inputs(shape, q, k, v)?;
    let scale = shape.resolve_scale(scale)? as f64;
    if let HostRemainder::AddBias(bias) = remainder {
        check_len("bias", bias, (shape.heads * shape.head_dim) as usize)?;
    }
    let cx = Ctx { shape: *shape, layout, q, k, scale };
    let (t_len, d) = (shape.seq_len, shape.head_dim as usize);
    let mut o = vec![0.0f64; q.len()];
    let rows = (shape.batch * shape.heads * t_len) as usize;
    let (mut rem, mut log_rem) = (vec![0.0; rows], vec![0.0; rows]);
    let group = shape.heads / shape.kv_heads;
    for b in 0..shape.batch {
        for h in 0..shape.heads {
            for i in 0..t_len {
                let oi = cx.q_at(b, i, h);
                let mut acc = 0.0f64; // log of the stick left
                for j in (0..visible(i, mask)).rev() {
                    let z = cx.logit(b, h, i, j);
                    let w = (-softplus(-z) + acc).exp();
                    let vj = cx.kv_at(b, j, h / group);
                    for x in 0..d {
                        o[oi + x] += w * v[vj + x] as f64;
                    }
                    acc -= softplus(z);
                }
                let r = ((b * shape.heads + h) * t_len + i) as usize;
                rem[r] = acc.exp();
                log_rem[r] = acc;
                for x in 0..d {
                    o[oi + x] += rem[r]
                        * match remainder {
                            HostRemainder::AddToValue => v[cx.kv_at(b, i, h / group) + x] as f64,
                            HostRemainder::AddBias(bias) => bias[h as usize * d + x] as f64,
                            HostRemainder::Discard | HostRemainder::Return => 0.0,
                        };
                }
            }
        }
    }
    Ok(Output { o, rem, log_rem })
}

/// The full weight matrix `A` of one `(batch, head)`: `T x T`, row-major, `A[i][j]` the weight
/// of key `j` for query `i` (0 where `j` is not visible).
///
/// # Errors
/// As [`forward`].
pub fn weights(
    shape: &Shape,
    layout: Layout,
    q: &[f32],
    k: &[f32],
    mask: Mask,
    scale: Option<f32>,
    batch: u32,
    head: u32,
) -> Result<Vec<f64>> {
    check_inputs(shape, q, k, k)?;
    if batch >= shape.batch || head >= shape.heads {
        return Err(Error::Shape(format!("(batch {batch}, head {head}) is outside {shape:?}")));
    }
    let scale = shape.resolve_scale(scale)? as f64;
    let cx = Ctx { shape: *shape, layout, q, k, scale };
    let t = shape.seq_len as usize;
    let mut a = vec![0.0f64; t * t];
    for i in 0..shape.seq_len {
        let mut acc = 0.0f64;
        for j in (0..visible(i, mask)).rev() {
            let z = cx.logit(batch, head, i, j);
            a[i as usize * t + j as usize] = (-softplus(-z) + acc).exp();
            acc -= softplus(z);
        }
    }
    Ok(a)
}
