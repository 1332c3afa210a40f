//! The definition: stick-breaking attention in double precision, straight from
//! docs/ALGORITHM.md, O(T^2 D). Every GPU test checks against it.
//!
//! - [`forward`]: `o`, `rem` and `log rem` of a forward problem, remainder modes included;
//! - [`weights`]: the full weight matrix `A` of one (batch, head);
//! - [`backward`]: the gradients `dq`, `dk`, `dv` (and `dbias`) of a loss given by `d_o` and
//!   `d_rem`, the definition a backward kernel is tested against;
//! - [`Rng`]: the deterministic inputs every test, benchmark and tool draws.

mod backward;
mod forward;
mod rng;

pub use backward::{backward, Gradients};
pub use forward::{forward, weights, Output};
pub use rng::Rng;

/// `softplus(x) = log(1 + e^x)`, never overflowing.
pub fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}
