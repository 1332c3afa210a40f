//! The tensor-core kernel's logic (staging of K and V through workgroup memory, the subgroups'
//! shares of each tile, the scan, the diagonal mask, the tile past T, the epilogue) checked on
//! every adapter: where cooperative matrices are missing (lavapipe in CI) its matrix operations
//! run emulated (`KernelPath::EmulatedCooperativeMatrix`, the same kernel file); where they exist
//! (the GPU machine) the real kernel runs too. Tolerances as in tests/forward.rs for this path.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{check_close, Rng};
use sbattn::{reference, round_to, Dtype, ForwardTuning, HostInput, HostRemainder, KernelPath, Layout, Mask, Shape};

/// (T, D, heads, kv heads, batch, mask, remainder, layout).
type Case = (u32, u32, u32, u32, u32, Mask, u8, Layout);

/// Every T around the 32- and 64-key tiles and the 64-row query tile, the head dims the
/// emulation fits in 32 KiB.
fn cases() -> Vec<Case> {
    let ts = [1u32, 2, 7, 31, 32, 33, 63, 64, 65, 100, 130, 257];
    let ds = [16u32, 48, 64, 96];
    let mut out = Vec::new();
    for (n, &t) in ts.iter().enumerate() {
        let d = ds[n % ds.len()];
        let (h, hk) = [(2, 2), (4, 2), (3, 1)][n % 3];
        let mask = if n % 2 == 0 { Mask::Strict } else { Mask::IncludeCurrent };
        let layout = if n % 4 < 2 { Layout::Bthd } else { Layout::Bhtd };
        out.push((t, d, h, hk, 1 + (n % 2) as u32, mask, (n % 4) as u8, layout));
    }
    out
}

// The cases in two halves, one test each, so that lavapipe's compiles (the cost of this file)
// run on two threads.
#[test]
fn cooperative_kernel_even_cases() {
    matches_reference(0);
}

#[test]
fn cooperative_kernel_odd_cases() {
    matches_reference(1);
}

fn matches_reference(half: usize) {
    let attn = gpu_or_skip!();
    let mut ran = 0;
    for (ci, (t, d, h, hk, b, mask, rem, layout)) in cases().into_iter().enumerate().filter(|(i, _)| i % 2 == half) {
        let shape = Shape::new().with_batch(b).with_seq_len(t).with_heads(h).with_kv_heads(hk).with_head_dim(d);
        let mut rng = Rng::new(500 + ci as u64);
        let nq = (b * t * h * d) as usize;
        let nkv = (b * t * hk * d) as usize;
        let q = round_to(&rng.normals(nq, 1.0), Dtype::F16);
        let k = round_to(&rng.normals(nkv, 1.0), Dtype::F16);
        let v = round_to(&rng.normals(nkv, 1.0), Dtype::F16);
        let bias = round_to(&rng.normals((h * d) as usize, 1.0), Dtype::F16);
        let remainder = [HostRemainder::Discard, HostRemainder::Return, HostRemainder::AddToValue, HostRemainder::AddBias(&bias)][rem as usize];
        let input = HostInput::new(shape, &q, &k, &v).with_dtype(Dtype::F16).with_layout(layout).with_mask(mask).with_remainder(remainder);
        let want = reference::forward(&input).unwrap();
        let max_v = v.iter().fold(0.0f64, |m, x| m.max(x.abs() as f64));
        let abs_extra = (2f64.powi(-11) + t as f64 * 2f64.powi(-25)) * max_v;
        for path in [KernelPath::CooperativeMatrix, KernelPath::EmulatedCooperativeMatrix] {
            // CI: one key-tile width per case (pairs of cases alternate), so each head dim is
            // compiled once; SBATTN_FULL_TESTS=1 runs both on every case.
            let widths: &[u32] = if common::full_tests() { &[32, 64] } else { &[[32, 64][(ci / 2) % 2]] };
            for &block_n in widths {
                let tuning = ForwardTuning::default().with_coop_block_n(block_n);
                let variant = match sbattn::ops::forward::plan::choose(attn.capabilities(), Dtype::F16, d, path, true, &tuning) {
                    Ok(v) => v,
                    Err(e) => {
                        eprintln!("T{t} D{d}: {path:?} BN {block_n} skipped: {e}");
                        continue;
                    }
                };
                let got = attn.run_host_blocking(&input.with_path(path).with_tuning(tuning)).unwrap();
                let label = format!("T{t} D{d} H{h}/{hk} B{b} {mask:?} rem {rem} {layout:?} {path:?} {:?}", variant.tiles);
                let (e, rms) = check_close(&format!("{label} o"), &got.o, &want.o, 2f64.powi(-11), abs_extra);
                check_close(&format!("{label} log_rem"), &got.log_rem, &want.log_rem, 0.0, 0.0);
                if let Some(r) = &got.rem {
                    check_close(&format!("{label} rem"), r, &want.rem, 0.0, 0.0);
                }
                assert!(rms <= 1e-3, "{label}: relative RMS {rms:e}");
                eprintln!("{label}: max |err| {e:.2e}");
                ran += 1;
            }
        }
    }
    assert!(ran > 0, "no cooperative-matrix kernel ran (emulated or real): this adapter lacks f16 or subgroups");
}
