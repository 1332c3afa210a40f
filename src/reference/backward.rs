//! The backward pass in f64 (docs/ALGORITHM.md, "Backward"): the definition a GPU backward
//! kernel is tested against.
//!
//! Per row `i`, with `g_ij = dot(do_i, v_j)`, `dr_i` the remainder's total gradient and
//! `u_ij = A_ij (g_ij - dr_i)`:
//!
//! ```text
//! dz_ij = (1 - beta_ij) u_ij - beta_ij sum_{l < j} u_il      (= u_ij - beta_ij sum_{l <= j} u_il)
//! dq_i  = s sum_j dz_ij k_j,   dk_j = s sum_i dz_ij q_i,   dv_j = sum_i A_ij do_i
//! ```
//!
//! plus `dv_i += rem_i do_i` (`AddToValue`) or `dbias_h += sum_i rem_i do_i` (`AddBias`).

use super::softplus;
use crate::host::check_len;
use crate::{Error, HostInput, HostRemainder, Result};

/// Gradients of the reference backward pass, in f64.
#[derive(Clone, Debug)]
pub struct Gradients {
    /// `dL/dq`, in the layout (and length) of `q`.
    pub dq: Vec<f64>,
    /// `dL/dk`, in the layout of `k` (`kv_heads` heads: each key/value head sums the gradients
    /// of the query heads of its group).
    pub dk: Vec<f64>,
    /// `dL/dv`, in the layout of `v` (group sums as for `dk`; with
    /// [`HostRemainder::AddToValue`] the remainder's share `rem_i do_i` included).
    pub dv: Vec<f64>,
    /// `dL/dbias`, `[H, D]`, for [`HostRemainder::AddBias`] (summed over batch and rows); `None`
    /// otherwise.
    pub dbias: Option<Vec<f64>>,
}

/// The backward pass of `input` (dtype, path and early-exit threshold ignored, as in
/// [`super::forward`]) for the loss whose gradient with respect to `o` is `d_o` and with
/// respect to `rem` is `d_rem`: `L = sum(o * d_o) + sum(rem * d_rem)`.
///
/// `d_o` has the layout and length of `o` (that is, of `q`). `d_rem` is `[B, H, T]` and is
/// given exactly when the remainder is [`HostRemainder::Return`] (the other modes have no `rem`
/// output). `O(T^2 D)`, in log space like the forward pass: finite for logits of `+-1e4`.
///
/// # Errors
/// As [`super::forward`]; [`Error::HostData`] when `d_o` or `d_rem` has the wrong length;
/// [`Error::InvalidParameter`] when `d_rem` is missing for `Return` or given for another mode.
pub fn backward(input: &HostInput<'_>, d_o: &[f32], d_rem: Option<&[f32]>) -> Result<Gradients> {
    input.validate()?;
    let s = input.shape;
    let scale = s.resolve_scale(input.scale)? as f64;
    check_len("d_o", d_o, input.q.len())?;
    let rows = s.rows() as usize;
    let d_rem = match (input.remainder, d_rem) {
        (HostRemainder::Return, Some(r)) => {
            check_len("d_rem", r, rows)?;
            Some(r)
        }
        (HostRemainder::Return, None) => {
            return Err(Error::InvalidParameter { name: "d_rem", reason: "required with HostRemainder::Return".into() });
        }
        (_, Some(_)) => {
            return Err(Error::InvalidParameter {
                name: "d_rem",
                reason: "given, but only HostRemainder::Return has a rem output".into(),
            });
        }
        (_, None) => None,
    };

    let (t_len, heads, d) = (s.seq_len(), s.heads(), s.head_dim() as usize);
    let (q_str, kv_str) = (input.layout.strides(t_len, heads, s.head_dim()), input.layout.strides(t_len, s.kv_heads(), s.head_dim()));
    let q_at = |b: u32, t: u32, h: u32| q_str.index(b, t, h) as usize;
    let kv_at = |b: u32, t: u32, h: u32| kv_str.index(b, t, h / s.group()) as usize;
    let dot = |a: &[f32], b: &[f32]| -> f64 { a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum() };

    let mut dq = vec![0.0f64; input.q.len()];
    let mut dk = vec![0.0f64; input.k.len()];
    let mut dv = vec![0.0f64; input.v.len()];
    let mut dbias = matches!(input.remainder, HostRemainder::AddBias(_)).then(|| vec![0.0f64; heads as usize * d]);

    // Per-row scratch over the visible keys: logits and the log of the stick left just before
    // each key breaks (S_ij = sum_{j < l <= last(i)} log(1 - beta_il)).
    let mut z = vec![0.0f64; t_len as usize];
    let mut stick = vec![0.0f64; t_len as usize];
    for b in 0..s.batch() {
        for h in 0..heads {
            for i in 0..t_len {
                let n = input.mask.visible(i) as usize;
                let oi = q_at(b, i, h);
                let (qi, doi) = (&input.q[oi..oi + d], &d_o[oi..oi + d]);
                // Nearest key first, as the forward pass: the suffix sums are exact here, with
                // no cancellation against log rem (a kernel rebuilds them from log rem, left
                // to right; see docs/ALGORITHM.md).
                let mut acc = 0.0f64;
                for j in (0..n).rev() {
                    let kj = kv_at(b, j as u32, h);
                    z[j] = scale * dot(qi, &input.k[kj..kj + d]);
                    stick[j] = acc;
                    acc -= softplus(z[j]);
                }
                let rem = acc.exp();
                let r = ((b * heads + h) * t_len + i) as usize;
                let vi = kv_at(b, i, h);
                // The remainder's total gradient, and its direct terms.
                let dr = match input.remainder {
                    HostRemainder::Discard => 0.0,
                    HostRemainder::Return => d_rem.map_or(0.0, |g| g[r] as f64),
                    HostRemainder::AddToValue => {
                        for x in 0..d {
                            dv[vi + x] += rem * doi[x] as f64;
                        }
                        dot(doi, &input.v[vi..vi + d])
                    }
                    HostRemainder::AddBias(bias) => {
                        let bh = &bias[h as usize * d..(h as usize + 1) * d];
                        if let Some(db) = dbias.as_mut() {
                            for x in 0..d {
                                db[h as usize * d + x] += rem * doi[x] as f64;
                            }
                        }
                        dot(doi, bh)
                    }
                };
                // Far end first: `prefix` is sum_{l < j} u_il.
                let mut prefix = 0.0f64;
                for j in 0..n {
                    let kj = kv_at(b, j as u32, h);
                    let (kjs, vjs) = (&input.k[kj..kj + d], &input.v[kj..kj + d]);
                    let a = (-softplus(-z[j]) + stick[j]).exp();
                    let (beta, one_minus) = ((-softplus(-z[j])).exp(), (-softplus(z[j])).exp());
                    let u = a * (dot(doi, vjs) - dr);
                    let dz = one_minus * u - beta * prefix;
                    prefix += u;
                    for x in 0..d {
                        dq[oi + x] += scale * dz * kjs[x] as f64;
                        dk[kj + x] += scale * dz * qi[x] as f64;
                        dv[kj + x] += a * doi[x] as f64;
                    }
                }
            }
        }
    }
    Ok(Gradients { dq, dk, dv, dbias })
}
