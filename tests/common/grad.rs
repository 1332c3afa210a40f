//! The backward tolerance (tests/backward.rs's module docs derive it), shared by tests/backward.rs
//! and the GPU property tests (tests/fuzz_gpu.rs): each gradient element within
//! `TOL EPS scale` of the reference, the scale being the gradient with every term replaced by
//! its magnitude ([`magnitudes`]), plus the f16 output rounding; relative RMS under `RMS_F32` /
//! `RMS_F16` for random inputs. The magnitudes take `|scale|`, so that a negative scale (the
//! property tests draw some) gets a positive error scale; for the positive scales of
//! tests/backward.rs that is the scale itself.

use sbattn::{reference, Dtype, HostInput, HostRemainder};

use super::compare;

/// f32 epsilon (2^-24, the unit roundoff).
pub const EPS: f64 = 1.0 / 16_777_216.0;
/// Allowed error in units of `EPS` times the error scale.
pub const TOL: f64 = 128.0;
/// Below f32's normal range (weights that underflow).
pub const FLOOR: f64 = 1e-35;
pub const RMS_F32: f64 = 1e-5;
pub const RMS_F16: f64 = 5e-4;

/// The gradients' error scale, per element: each gradient with every term replaced by its
/// magnitude, and each weight and beta widened by the relative error it inherits from its
/// logits (`exp` turns an absolute error of a log into a relative one):
/// - `za_j = s sum_x |q_x k_jx|` (a logit's rounding is `~eps za_j`), `fac_j = 1 + za_j +
///   |S_j| + sum_{m > j} beta_m za_m` (`S_j` the log of the stick left before key j; A_j's
///   log sums these);
/// - `|u_j| -> A_j fac_j (|g_j| + |dr|)`, `|dz_j| -> (1 - beta_j) |u_j| + beta_j (1 + za_j)
///   (sum_l |u_l| + |u_j|)`: the kernels form `sum_{l < j} u_l` as a difference of sums over the
///   row (shaders/backward/dq.wgsl), so its rounding is that of the row's whole sum, as
///   FlashAttention's `dP - rowsum(dO O)` is;
/// - `dq_i -> s sum_j |dz_ij| |k_j|`, `dk_j -> s sum_i |dz_ij| |q_i|`, `dv_j -> sum_i A_ij fac_j
///   |do_i|` (+ `rem_j |do_j|`), `dbias -> sum_i rem_i |do_i|`, with `rem` widened by
///   `1 + |log rem|` (it comes from the forward's f32 `log rem`).
///
/// `reference::backward`'s loops, with absolute values.
pub fn magnitudes(input: &HostInput<'_>, d_o: &[f32]) -> reference::Gradients {
    use reference::softplus;
    let s = input.shape;
    let scale = s.resolve_scale(input.scale).unwrap() as f64;
    // The error scale is a size: |scale| (negative scales flip the logits, not their rounding).
    let ascale = scale.abs();
    let (t_len, heads, d) = (s.seq_len(), s.heads(), s.head_dim() as usize);
    let (qs, kvs) = (input.layout.strides(t_len, heads, s.head_dim()), input.layout.strides(t_len, s.kv_heads(), s.head_dim()));
    let q_at = |b: u32, t: u32, h: u32| qs.index(b, t, h) as usize;
    let kv_at = |b: u32, t: u32, h: u32| kvs.index(b, t, h / s.group()) as usize;
    let dot = |a: &[f32], b: &[f32]| -> f64 { a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum() };
    let adot = |a: &[f32], b: &[f32]| -> f64 { a.iter().zip(b).map(|(x, y)| (*x as f64 * *y as f64).abs()).sum() };
    let mut dq = vec![0.0f64; input.q.len()];
    let mut dk = vec![0.0f64; input.k.len()];
    let mut dv = vec![0.0f64; input.v.len()];
    let mut dbias = matches!(input.remainder, HostRemainder::AddBias(_)).then(|| vec![0.0f64; heads as usize * d]);
    let n_max = t_len as usize;
    let (mut z, mut za, mut stick, mut fac, mut um) = (vec![0.0; n_max], vec![0.0; n_max], vec![0.0; n_max], vec![0.0; n_max], vec![0.0; n_max]);
    // Every (batch entry, head), then every query row of it.
    for (b, h) in (0..s.batch()).flat_map(|b| (0..heads).map(move |h| (b, h))) {
        for i in 0..t_len {
            let n = input.mask.visible(i) as usize;
            let oi = q_at(b, i, h);
            let (qi, doi) = (&input.q[oi..oi + d], &d_o[oi..oi + d]);
            let (mut acc, mut zsum) = (0.0f64, 0.0f64);
            for j in (0..n).rev() {
                let kj = kv_at(b, j as u32, h);
                z[j] = scale * dot(qi, &input.k[kj..kj + d]);
                za[j] = ascale * adot(qi, &input.k[kj..kj + d]);
                stick[j] = acc;
                fac[j] = 1.0 + za[j] + acc.abs() + zsum;
                acc -= softplus(z[j]);
                zsum += (-softplus(-z[j])).exp() * za[j];
            }
            // rem comes from the forward's f32 log rem: relative error ~eps |log rem|.
            let rem = acc.exp() * (1.0 + acc.abs());
            let vi = kv_at(b, i, h);
            let dr = match input.remainder {
                HostRemainder::Return => 1.0,
                HostRemainder::AddToValue => {
                    for x in 0..d {
                        dv[vi + x] += rem * (doi[x] as f64).abs();
                    }
                    adot(doi, &input.v[vi..vi + d])
                }
                HostRemainder::AddBias(bias) => {
                    if let Some(db) = dbias.as_mut() {
                        for x in 0..d {
                            db[h as usize * d + x] += rem * (doi[x] as f64).abs();
                        }
                    }
                    adot(doi, &bias[h as usize * d..(h as usize + 1) * d])
                }
                HostRemainder::Discard => 0.0,
            };
            let mut wabs = 0.0;
            for j in 0..n {
                let kj = kv_at(b, j as u32, h);
                let a = (-softplus(-z[j]) + stick[j]).exp();
                um[j] = a * fac[j] * (adot(doi, &input.v[kj..kj + d]) + dr);
                wabs += um[j];
            }
            for j in 0..n {
                let kj = kv_at(b, j as u32, h);
                let a = (-softplus(-z[j]) + stick[j]).exp();
                let (beta, omb) = ((-softplus(-z[j])).exp(), (-softplus(z[j])).exp());
                let dzm = omb * um[j] + beta * (1.0 + za[j]) * (wabs + um[j]);
                for x in 0..d {
                    dq[oi + x] += ascale * dzm * (input.k[kj + x] as f64).abs();
                    dk[kj + x] += ascale * dzm * (qi[x] as f64).abs();
                    dv[kj + x] += a * fac[j] * (doi[x] as f64).abs();
                }
            }
        }
    }
    reference::Gradients { dq, dk, dv, dbias }
}

/// Checks one gradient tensor (see the module docs) against the reference `want` with the
/// error scale `mag`; returns (max of |error| / (eps mag), relative RMS error).
pub fn check_grad(what: &str, got: &[f32], want: &[f64], mag: &[f64], dtype: Dtype, rms: bool) -> (f64, f64) {
    let e = compare(what, got, want);
    let (rel_round, abs_round) = if dtype == Dtype::F16 { (2f64.powi(-11), 2f64.powi(-25)) } else { (0.0, 0.0) };
    let mut worst = 0.0f64;
    for (i, ((&g, &w), &m)) in got.iter().zip(want).zip(mag).enumerate() {
        let round = rel_round * w.abs() + abs_round + FLOOR;
        let tol = TOL * EPS * m + round;
        let err = (g as f64 - w).abs();
        assert!(err <= tol, "{what}[{i}]: gpu {g} vs reference {w} (tol {tol:e}, error scale {m:e})");
        worst = worst.max((err - round).max(0.0) / (EPS * m).max(f64::MIN_POSITIVE));
    }
    let rms_limit = if dtype == Dtype::F16 { RMS_F16 } else { RMS_F32 };
    // A tensor that is exactly zero (no key seen anywhere) has no relative error to speak of.
    if rms && e.ref_max > 0.0 {
        assert!(e.rel_rms <= rms_limit, "{what}: relative RMS {:e} > {rms_limit:e}", e.rel_rms);
    }
    (worst, e.rel_rms)
}

