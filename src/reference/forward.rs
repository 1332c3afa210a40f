//! The forward pass in f64 (docs/ALGORITHM.md, "Reference in double precision").

use super::softplus;
use crate::{Error, HostInput, HostRemainder, Result};

/// Output of the reference forward pass.
#[derive(Clone, Debug)]
pub struct Output {
    /// `o`, in the layout of the inputs, remainder term included as requested.
    pub o: Vec<f64>,
    /// `rem_i = prod_j (1 - beta_ij)`, `[B, H, T]`.
    pub rem: Vec<f64>,
    /// `log rem_i`, `[B, H, T]` (the final carry of the kernels).
    pub log_rem: Vec<f64>,
}

/// Index arithmetic and logits of one problem.
struct Problem<'a> {
    input: &'a HostInput<'a>,
    scale: f64,
}

impl Problem<'_> {
    fn new<'a>(input: &'a HostInput<'a>) -> Result<Problem<'a>> {
        input.validate()?;
        let scale = input.shape.resolve_scale(input.scale)? as f64;
        Ok(Problem { input, scale })
    }

    fn at(&self, heads: u32, b: u32, t: u32, h: u32) -> usize {
        let s = &self.input.shape;
        self.input.layout.strides(s.seq_len(), heads, s.head_dim()).index(b, t, h) as usize
    }
    fn q_at(&self, b: u32, t: u32, h: u32) -> usize {
        self.at(self.input.shape.heads(), b, t, h)
    }
    fn kv_at(&self, b: u32, t: u32, h: u32) -> usize {
        let s = &self.input.shape;
        self.at(s.kv_heads(), b, t, h / s.group())
    }
    fn logit(&self, b: u32, h: u32, i: u32, j: u32) -> f64 {
        let d = self.input.shape.head_dim() as usize;
        let (qi, kj) = (self.q_at(b, i, h), self.kv_at(b, j, h));
        let dot: f64 = (0..d).map(|x| self.input.q[qi + x] as f64 * self.input.k[kj + x] as f64).sum();
        self.scale * dot
    }
}

/// The forward pass of `input` (its dtype, path and early-exit threshold are ignored: this is
/// the exact definition). `q` is `[B, T, H, D]` or `[B, H, T, D]` per the layout; `k`, `v`
/// likewise with `kv_heads`.
///
/// # Errors
/// Shape errors as in [`crate::Shape::validate`], wrong slice lengths, a non-finite scale.
pub fn forward(input: &HostInput<'_>) -> Result<Output> {
    let p = Problem::new(input)?;
    let s = input.shape;
    let (t_len, d) = (s.seq_len(), s.head_dim() as usize);
    let mut o = vec![0.0f64; input.q.len()];
    let rows = s.rows() as usize;
    let (mut rem, mut log_rem) = (vec![0.0; rows], vec![0.0; rows]);
    for b in 0..s.batch() {
        for h in 0..s.heads() {
            for i in 0..t_len {
                let oi = p.q_at(b, i, h);
                let mut acc = 0.0f64; // log of the stick left
                for j in (0..input.mask.visible(i)).rev() {
                    let z = p.logit(b, h, i, j);
                    let w = (-softplus(-z) + acc).exp();
                    let vj = p.kv_at(b, j, h);
                    for x in 0..d {
                        o[oi + x] += w * input.v[vj + x] as f64;
                    }
                    acc -= softplus(z);
                }
                let r = ((b * s.heads() + h) * t_len + i) as usize;
                rem[r] = acc.exp();
                log_rem[r] = acc;
                let vi = p.kv_at(b, i, h);
                for x in 0..d {
                    let extra = match input.remainder {
                        HostRemainder::AddToValue => input.v[vi + x] as f64,
                        HostRemainder::AddBias(bias) => bias[h as usize * d + x] as f64,
                        HostRemainder::Discard | HostRemainder::Return => 0.0,
                    };
                    o[oi + x] += rem[r] * extra;
                }
            }
        }
    }
    Ok(Output { o, rem, log_rem })
}

/// The full weight matrix `A` of one `(batch, head)` of `input` (its `v` is not used): `T x T`,
/// row-major, `A[i][j]` the weight of key `j` for query `i` (0 where `j` is not visible).
///
/// # Errors
/// As [`forward`], and [`Error::Shape`] for a batch or head outside the shape.
pub fn weights(input: &HostInput<'_>, batch: u32, head: u32) -> Result<Vec<f64>> {
    let p = Problem::new(input)?;
    let s = input.shape;
    if batch >= s.batch() || head >= s.heads() {
        return Err(Error::Shape(format!("(batch {batch}, head {head}) is outside {s:?}")));
    }
    let t = s.seq_len() as usize;
    let mut a = vec![0.0f64; t * t];
    for i in 0..s.seq_len() {
        let mut acc = 0.0f64;
        for j in (0..input.mask.visible(i)).rev() {
            let z = p.logit(batch, head, i, j);
            a[i as usize * t + j as usize] = (-softplus(-z) + acc).exp();
            acc -= softplus(z);
        }
    }
    Ok(a)
}
