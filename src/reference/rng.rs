//! Deterministic random inputs, the same everywhere they are needed (tests, benchmarks, the
//! command-line tool, the browser demo): a result can be reproduced from its seed alone.

/// SplitMix64 with Box-Muller normals; [`Rng::normal_at`] gives element `i` of a stream
/// directly, so large inputs can be generated in any order or in parallel.
#[derive(Clone, Debug)]
pub struct Rng(u64);

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn to_unit(x: u64) -> f64 {
    ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

fn box_muller(u: f64, v: f64) -> f32 {
    ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
}

impl Rng {
    /// The stream of `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ GOLDEN)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix(self.0)
    }

    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        to_unit(self.next_u64())
    }

    /// A standard normal sample.
    pub fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        box_muller(u, v)
    }

    /// `n` normal samples of standard deviation `std`.
    pub fn normals(&mut self, n: usize, std: f32) -> Vec<f32> {
        (0..n).map(|_| self.normal() * std).collect()
    }

    /// Element `index` of the counter-based normal stream `seed` (independent of any state).
    pub fn normal_at(seed: u64, index: u64) -> f32 {
        let base = mix(seed ^ GOLDEN).wrapping_add(index.wrapping_mul(2).wrapping_mul(GOLDEN));
        box_muller(to_unit(mix(base)), to_unit(mix(base.wrapping_add(GOLDEN))))
    }
}
