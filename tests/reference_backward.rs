//! The reference backward pass (`sbattn::reference::backward`, docs/ALGORITHM.md "Backward")
//! against central finite differences of the forward definition. No GPU.
//!
//! The loss is `L = sum(o * d_o) + sum(rem * d_rem)`, so `backward(input, d_o, d_rem)` must be
//! its gradient. `reference::forward` takes f32 inputs, too coarse to perturb by `h = 1e-5`, so
//! the differences are taken on `forward64` below, an f64 copy of the definition on f64 inputs;
//! every case first checks that the copy reproduces `reference::forward` on the unperturbed
//! inputs (drawn in f32, so exactly representable in both), which makes the finite differences
//! a check against the crate's forward pass.

use sbattn::reference::{self, softplus, Rng};
use sbattn::{Error, HostInput, HostRemainder, Layout, Mask, Shape};

/// Finite-difference step. Central differences err by `h^2 / 6 |L'''|` (truncation) plus about
/// `eps_f64 |L| / h` (rounding); with `|L| <= ~1e2` and third derivatives `<= ~1e2` on these
/// inputs both are `~1e-9`, so `1e-5` balances them.
const H: f64 = 1e-5;

/// Allowed `|grad - fd| / (1 + |grad|)`. The estimate above gives `~1e-9`; `1e-6` leaves three
/// orders of margin while still catching any wrong term (a missing or mis-signed term moves a
/// gradient by `O(1e-3)` or more on these inputs; with saturated logits the smallest gradients
/// that a term contributes are `~beta(1 - beta) >= e^-30 ~ 1e-13`, which is why the saturated
/// case also gets an absolute check below).
const TOL: f64 = 1e-6;

/// Remainder mode without the borrowed bias (the bias is a parameter here).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Discard,
    Return,
    AddToValue,
    AddBias,
}

const MODES: [Mode; 4] = [Mode::Discard, Mode::Return, Mode::AddToValue, Mode::AddBias];

/// One problem: configuration plus f32 data (what `HostInput` takes) and the loss weights.
struct Case {
    shape: Shape,
    layout: Layout,
    mask: Mask,
    scale: Option<f32>,
    mode: Mode,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    bias: Vec<f32>,
    d_o: Vec<f32>,
    d_rem: Vec<f32>,
}

impl Case {
    fn input(&self) -> HostInput<'_> {
        let remainder = match self.mode {
            Mode::Discard => HostRemainder::Discard,
            Mode::Return => HostRemainder::Return,
            Mode::AddToValue => HostRemainder::AddToValue,
            Mode::AddBias => HostRemainder::AddBias(&self.bias),
        };
        HostInput::new(self.shape, &self.q, &self.k, &self.v)
            .with_layout(self.layout)
            .with_mask(self.mask)
            .with_scale(self.scale)
            .with_remainder(remainder)
    }

    fn d_rem(&self) -> Option<&[f32]> {
        (self.mode == Mode::Return).then_some(&self.d_rem[..])
    }

    fn q_at(&self, b: u32, t: u32, h: u32) -> usize {
        let s = self.shape;
        self.layout.strides(s.seq_len(), s.heads(), s.head_dim()).index(b, t, h) as usize
    }

    fn kv_at(&self, b: u32, t: u32, h: u32) -> usize {
        let s = self.shape;
        self.layout.strides(s.seq_len(), s.kv_heads(), s.head_dim()).index(b, t, h / s.group()) as usize
    }

    /// The forward definition in f64 on f64 inputs: `(o, rem)`, as `reference::forward`.
    fn forward64(&self, q: &[f64], k: &[f64], v: &[f64], bias: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let s = self.shape;
        let scale = s.resolve_scale(self.scale).unwrap() as f64;
        let d = s.head_dim() as usize;
        let mut o = vec![0.0; q.len()];
        let mut rem = vec![0.0; s.rows() as usize];
        for b in 0..s.batch() {
            for h in 0..s.heads() {
                for i in 0..s.seq_len() {
                    let oi = self.q_at(b, i, h);
                    let mut acc = 0.0f64;
                    for j in (0..self.mask.visible(i)).rev() {
                        let kj = self.kv_at(b, j, h);
                        let z = scale * (0..d).map(|x| q[oi + x] * k[kj + x]).sum::<f64>();
                        let w = (-softplus(-z) + acc).exp();
                        for x in 0..d {
                            o[oi + x] += w * v[kj + x];
                        }
                        acc -= softplus(z);
                    }
                    let r = ((b * s.heads() + h) * s.seq_len() + i) as usize;
                    rem[r] = acc.exp();
                    let vi = self.kv_at(b, i, h);
                    for x in 0..d {
                        o[oi + x] += rem[r]
                            * match self.mode {
                                Mode::AddToValue => v[vi + x],
                                Mode::AddBias => bias[h as usize * d + x],
                                Mode::Discard | Mode::Return => 0.0,
                            };
                    }
                }
            }
        }
        (o, rem)
    }

    fn loss64(&self, q: &[f64], k: &[f64], v: &[f64], bias: &[f64]) -> f64 {
        let (o, rem) = self.forward64(q, k, v, bias);
        let lo: f64 = o.iter().zip(&self.d_o).map(|(a, g)| a * *g as f64).sum();
        let lr: f64 = if self.mode == Mode::Return { rem.iter().zip(&self.d_rem).map(|(a, g)| a * *g as f64).sum() } else { 0.0 };
        lo + lr
    }
}

fn widen(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// A case with normal data of standard deviation `std` for q, k, v, bias and the loss weights.
fn random_case(shape: Shape, layout: Layout, mask: Mask, scale: Option<f32>, mode: Mode, rng: &mut Rng, std: f32) -> Case {
    let (b, t, h, hkv, d) =
        (shape.batch() as usize, shape.seq_len() as usize, shape.heads() as usize, shape.kv_heads() as usize, shape.head_dim() as usize);
    Case {
        shape,
        layout,
        mask,
        scale,
        mode,
        q: rng.normals(b * t * h * d, std),
        k: rng.normals(b * t * hkv * d, std),
        v: rng.normals(b * t * hkv * d, 1.0),
        bias: rng.normals(h * d, 1.0),
        d_o: rng.normals(b * t * h * d, 1.0),
        d_rem: rng.normals(b * h * t, 1.0),
    }
}

/// Largest discrepancies seen by [`check_fd`]: `(relative |g - fd| / (1 + |g|), absolute)`.
#[derive(Default, Debug)]
struct Worst {
    rel: f64,
    abs: f64,
    at: String,
}

/// Compares `reference::backward` with central differences of `loss64` for every element of
/// q, k, v (and the bias under `AddBias`); returns the worst discrepancy.
fn check_fd(c: &Case, worst: &mut Worst) {
    let input = c.input();
    let g = reference::backward(&input, &c.d_o, c.d_rem()).unwrap();
    let (q, k, v, bias) = (widen(&c.q), widen(&c.k), widen(&c.v), widen(&c.bias));

    // The f64 copy is the crate's forward pass on these inputs.
    let want = reference::forward(&input).unwrap();
    let (o, rem) = c.forward64(&q, &k, &v, &bias);
    for (a, b) in o.iter().zip(&want.o).chain(rem.iter().zip(&want.rem)) {
        assert!((a - b).abs() <= 1e-12 * (1.0 + b.abs()), "forward64 {a} vs reference {b}");
    }

    assert_eq!((g.dq.len(), g.dk.len(), g.dv.len()), (q.len(), k.len(), v.len()));
    assert_eq!(g.dbias.is_some(), c.mode == Mode::AddBias);
    let grads: [(&str, &[f64]); 4] = [("dq", &g.dq), ("dk", &g.dk), ("dv", &g.dv), ("dbias", g.dbias.as_deref().unwrap_or(&[]))];
    for (which, grad) in grads {
        for (idx, &gv) in grad.iter().enumerate() {
            let mut p = [q.clone(), k.clone(), v.clone(), bias.clone()];
            let slot = match which {
                "dq" => 0,
                "dk" => 1,
                "dv" => 2,
                _ => 3,
            };
            let x0 = p[slot][idx];
            p[slot][idx] = x0 + H;
            let plus = c.loss64(&p[0], &p[1], &p[2], &p[3]);
            p[slot][idx] = x0 - H;
            let minus = c.loss64(&p[0], &p[1], &p[2], &p[3]);
            let fd = (plus - minus) / (2.0 * H);
            assert!(gv.is_finite(), "{which}[{idx}] = {gv}");
            let abs = (gv - fd).abs();
            let rel = abs / (1.0 + gv.abs());
            if rel > worst.rel {
                let at = format!(
                    "{which}[{idx}] grad {gv:e} fd {fd:e}: {:?} {:?} {:?} scale {:?} {:?}",
                    c.shape, c.layout, c.mask, c.scale, c.mode
                );
                *worst = Worst { rel, abs: worst.abs.max(abs), at };
            }
            worst.abs = worst.abs.max(abs);
            assert!(
                rel <= TOL,
                "{which}[{idx}]: backward {gv:e} vs finite difference {fd:e} ({:?} {:?} {:?} scale {:?} {:?})",
                c.shape,
                c.layout,
                c.mask,
                c.scale,
                c.mode
            );
        }
    }
}

/// Every small shape, both masks, all remainder modes, both layouts; batch and scale (default,
/// positive, negative) drawn per case.
#[test]
fn gradients_match_finite_differences() {
    let mut rng = Rng::new(0xB0C);
    let mut worst = Worst::default();
    let scales = [None, Some(0.75f32), Some(-1.3), Some(2.0), Some(-0.5)];
    let mut cases = 0;
    for t in [1u32, 2, 3, 7] {
        for d in [1u32, 3, 4] {
            for (h, hkv) in [(1u32, 1u32), (2, 1), (4, 2)] {
                for mask in [Mask::Strict, Mask::IncludeCurrent] {
                    for mode in MODES {
                        for layout in [Layout::Bthd, Layout::Bhtd] {
                            let b = 1 + (rng.next_u64() % 2) as u32;
                            let scale = scales[(rng.next_u64() % scales.len() as u64) as usize];
                            let shape = Shape::new().with_batch(b).with_seq_len(t).with_heads(h).with_kv_heads(hkv).with_head_dim(d);
                            let c = random_case(shape, layout, mask, scale, mode, &mut rng, 1.2);
                            check_fd(&c, &mut worst);
                            cases += 1;
                        }
                    }
                }
            }
        }
    }
    eprintln!("{cases} cases; largest |grad - fd| / (1 + |grad|) = {:.3e}, largest |grad - fd| = {:.3e} at {}", worst.rel, worst.abs, worst.at);
}

/// Logits of magnitude 5 to 30 (beta within e^-5 of 0 or 1, down to e^-30): still the gradient
/// of the definition. D = 3 with one dominant coordinate of magnitude sqrt(5)..sqrt(30) and two
/// small ones, scale 1, so |z| = |q_0 k_0| + O(1e-2).
#[test]
fn saturated_logits_match_finite_differences() {
    let mut rng = Rng::new(31);
    let mut worst = Worst::default();
    let big = |rng: &mut Rng, n: usize| -> Vec<f32> {
        (0..n)
            .map(|x| {
                if x % 3 == 0 {
                    let m = (5f64.sqrt() + rng.uniform() * (30f64.sqrt() - 5f64.sqrt())) as f32;
                    if rng.next_u64().is_multiple_of(2) { m } else { -m }
                } else {
                    0.003 * rng.normal()
                }
            })
            .collect()
    };
    let shape = Shape::new().with_batch(2).with_seq_len(7).with_heads(4).with_kv_heads(2).with_head_dim(3);
    let (mut zmin, mut zmax) = (f64::MAX, 0.0f64);
    for mask in [Mask::Strict, Mask::IncludeCurrent] {
        for mode in MODES {
            for layout in [Layout::Bthd, Layout::Bhtd] {
                let mut c = random_case(shape, layout, mask, Some(1.0), mode, &mut rng, 1.0);
                c.q = big(&mut rng, c.q.len());
                c.k = big(&mut rng, c.k.len());
                for b in 0..2 {
                    for h in 0..4 {
                        for i in 0..7 {
                            for j in 0..mask.visible(i) {
                                let (qi, kj) = (c.q_at(b, i, h), c.kv_at(b, j, h));
                                let z: f64 = (0..3).map(|x| c.q[qi + x] as f64 * c.k[kj + x] as f64).sum();
                                (zmin, zmax) = (zmin.min(z.abs()), zmax.max(z.abs()));
                            }
                        }
                    }
                }
                check_fd(&c, &mut worst);
            }
        }
    }
    assert!(zmin > 4.9 && zmax < 30.1, "|z| in [{zmin}, {zmax}]");
    // The absolute discrepancy: the relative check is weak for the tiny dq, dk here.
    assert!(worst.abs < 1e-8, "largest |grad - fd| {:e}", worst.abs);
    eprintln!(
        "|z| in [{zmin:.2}, {zmax:.2}]; largest |grad - fd| / (1 + |grad|) = {:.3e}, largest |grad - fd| = {:.3e} at {}",
        worst.rel, worst.abs, worst.at
    );
}

/// Logits of exactly +-1e4: finite gradients, and still those of the definition (where every
/// beta is exactly 0 or 1 in f64 the loss is flat in q and k, and linear in v and the bias).
#[test]
fn huge_logits_give_finite_gradients() {
    let mut rng = Rng::new(1e4 as u64);
    let mut worst = Worst::default();
    let shape = Shape::new().with_batch(2).with_seq_len(7).with_heads(4).with_kv_heads(2).with_head_dim(2);
    let sign = |rng: &mut Rng, n: usize| -> Vec<f32> {
        // (+-100, 0): z = +-1e4 exactly with scale 1.
        (0..n).map(|x| if x % 2 == 1 { 0.0 } else if rng.next_u64().is_multiple_of(2) { 100.0 } else { -100.0 }).collect()
    };
    for mask in [Mask::Strict, Mask::IncludeCurrent] {
        for mode in MODES {
            for layout in [Layout::Bthd, Layout::Bhtd] {
                let mut c = random_case(shape, layout, mask, Some(1.0), mode, &mut rng, 1.0);
                c.q = sign(&mut rng, c.q.len());
                c.k = sign(&mut rng, c.k.len());
                let g = reference::backward(&c.input(), &c.d_o, c.d_rem()).unwrap();
                let all = g.dq.iter().chain(&g.dk).chain(&g.dv).chain(g.dbias.iter().flatten());
                assert!(all.clone().all(|x| x.is_finite()), "non-finite gradient, {mode:?} {mask:?}");
                // beta is exactly 0 or 1: no logit gradient at all.
                assert!(g.dq.iter().chain(&g.dk).all(|&x| x == 0.0), "{mode:?} {mask:?}");
                check_fd(&c, &mut worst);
            }
        }
    }
    eprintln!("+-1e4: largest |grad - fd| = {:.3e}", worst.abs);
}

/// Grouped-query attention: each key/value head's dk, dv are the sums of the gradients of the
/// query heads of its group, which is what replicating k, v per query head (multi-head
/// attention) and summing gives.
#[test]
fn gqa_kv_gradients_sum_over_the_group() {
    let mut rng = Rng::new(5);
    let (b, t, h, hkv, d) = (2u32, 7u32, 4u32, 2u32, 3u32);
    let gqa = Shape::new().with_batch(b).with_seq_len(t).with_heads(h).with_kv_heads(hkv).with_head_dim(d);
    let mha = gqa.with_kv_heads(h);
    for layout in [Layout::Bthd, Layout::Bhtd] {
        for mask in [Mask::Strict, Mask::IncludeCurrent] {
            for mode in MODES {
                let c = random_case(gqa, layout, mask, Some(-0.8), mode, &mut rng, 1.0);
                let g = reference::backward(&c.input(), &c.d_o, c.d_rem()).unwrap();
                // k, v replicated for every query head.
                let (kv_g, kv_m) = (layout.strides(t, hkv, d), layout.strides(t, h, d));
                let replicate = |x: &[f32]| {
                    let mut out = vec![0.0f32; (b * t * h * d) as usize];
                    for bb in 0..b {
                        for tt in 0..t {
                            for hh in 0..h {
                                let (src, dst) = (kv_g.index(bb, tt, hh / (h / hkv)) as usize, kv_m.index(bb, tt, hh) as usize);
                                out[dst..dst + d as usize].copy_from_slice(&x[src..src + d as usize]);
                            }
                        }
                    }
                    out
                };
                let mut m = random_case(mha, layout, mask, Some(-0.8), mode, &mut rng, 1.0);
                (m.q, m.k, m.v, m.bias, m.d_o, m.d_rem) = (c.q.clone(), replicate(&c.k), replicate(&c.v), c.bias.clone(), c.d_o.clone(), c.d_rem.clone());
                let gm = reference::backward(&m.input(), &m.d_o, m.d_rem()).unwrap();
                let close = |a: f64, e: f64| (a - e).abs() <= 1e-12 * (1.0 + e.abs());
                assert!(g.dq.iter().zip(&gm.dq).all(|(a, e)| close(*a, *e)), "dq {mode:?}");
                assert_eq!(g.dbias.is_some(), gm.dbias.is_some());
                for (a, e) in g.dbias.iter().flatten().zip(gm.dbias.iter().flatten()) {
                    assert!(close(*a, *e), "dbias {mode:?}");
                }
                for bb in 0..b {
                    for tt in 0..t {
                        for kh in 0..hkv {
                            let gi = kv_g.index(bb, tt, kh) as usize;
                            for x in 0..d as usize {
                                let sum = |v: &[f64]| (0..h / hkv).map(|r| v[kv_m.index(bb, tt, kh * (h / hkv) + r) as usize + x]).sum::<f64>();
                                assert!(close(g.dk[gi + x], sum(&gm.dk)), "dk {mode:?} {layout:?}");
                                assert!(close(g.dv[gi + x], sum(&gm.dv)), "dv {mode:?} {layout:?}");
                            }
                        }
                    }
                }
            }
        }
    }
}

/// What the backward section of docs/ALGORITHM.md relies on: `log rem` alone rebuilds every
/// weight, walking keys left to right (`S = log rem`, then for each key `S += softplus(z_ij)`
/// and `A_ij = exp(log beta_ij + S)`), and the row sum of `u_ij = A_ij (g_ij - dr_i)` is
/// `l_i - dr_i`, with `l_i` the row's share of the loss.
#[test]
fn log_rem_rebuilds_the_weights() {
    let mut rng = Rng::new(77);
    let shape = Shape::new().with_seq_len(40).with_head_dim(8);
    for mask in [Mask::Strict, Mask::IncludeCurrent] {
        for mode in MODES {
            let c = random_case(shape, Layout::Bthd, mask, Some(0.9), mode, &mut rng, 1.5);
            let input = c.input();
            let out = reference::forward(&input).unwrap();
            let a = reference::weights(&input, 0, 0).unwrap();
            let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>();
            for i in 0..40usize {
                let qi = &c.q[i * 8..i * 8 + 8];
                let doi = &c.d_o[i * 8..i * 8 + 8];
                let mut stick = out.log_rem[i];
                let mut u_sum = 0.0;
                let dr = match mode {
                    Mode::Discard => 0.0,
                    Mode::Return => c.d_rem[i] as f64,
                    Mode::AddToValue => dot(doi, &c.v[i * 8..i * 8 + 8]),
                    Mode::AddBias => dot(doi, &c.bias),
                };
                for j in 0..mask.visible(i as u32) as usize {
                    let z = 0.9f32 as f64 * dot(qi, &c.k[j * 8..j * 8 + 8]);
                    // The stick before key j breaks: what keys 0..=j take plus rem.
                    stick += softplus(z);
                    let rebuilt = (-softplus(-z) + stick).exp();
                    let want = a[i * 40 + j];
                    assert!((rebuilt - want).abs() <= 1e-12, "row {i} key {j}: {rebuilt} vs {want}");
                    u_sum += want * (dot(doi, &c.v[j * 8..j * 8 + 8]) - dr);
                }
                // Before the nearest key breaks the stick is whole: log 1 = 0.
                assert!(stick.abs() <= 1e-12, "row {i}: {stick}");
                let mut l = doi.iter().zip(&out.o[i * 8..i * 8 + 8]).map(|(g, o)| *g as f64 * o).sum::<f64>();
                if mode == Mode::Return {
                    l += out.rem[i] * c.d_rem[i] as f64;
                }
                assert!((u_sum - (l - dr)).abs() <= 1e-12 * (1.0 + l.abs()), "row {i}: {u_sum} vs {}", l - dr);
            }
        }
    }
}

/// `d_rem` is given exactly with `Return`; `d_o` and `d_rem` lengths are checked.
#[test]
fn argument_errors() {
    let mut rng = Rng::new(3);
    let shape = Shape::new().with_batch(2).with_seq_len(3).with_heads(2).with_head_dim(4);
    let c = random_case(shape, Layout::Bthd, Mask::Strict, None, Mode::Return, &mut rng, 1.0);
    let ret = c.input();
    let discard = ret.with_remainder(HostRemainder::Discard);
    assert!(matches!(reference::backward(&ret, &c.d_o, None), Err(Error::InvalidParameter { name: "d_rem", .. })));
    assert!(matches!(reference::backward(&discard, &c.d_o, Some(&c.d_rem)), Err(Error::InvalidParameter { name: "d_rem", .. })));
    assert!(matches!(reference::backward(&ret, &c.d_o, Some(&c.d_rem[1..])), Err(Error::HostData { what: "d_rem", .. })));
    assert!(matches!(reference::backward(&discard, &c.d_o[1..], None), Err(Error::HostData { what: "d_o", .. })));
    assert!(matches!(reference::backward(&discard.with_scale(Some(f32::NAN)), &c.d_o, None), Err(Error::NonFiniteScale(_))));
    assert!(reference::backward(&ret, &c.d_o, Some(&c.d_rem)).is_ok());
    assert!(reference::backward(&discard, &c.d_o, None).is_ok());
}
