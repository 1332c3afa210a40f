//! Diagnostic: reads the tensor-core path's weights back (one-hot values make o_i = A_i) on
//! tiny problems and prints where they differ from the reference.
//! `cargo run --release --example coop_debug [path]` (path: coop | subgroup | shared).

use sbattn::{reference, Attention, Dtype, HostInput, HostRemainder, Layout, Mask, Path, Shape};

fn main() {
    let attn = Attention::with_default_adapter_blocking().expect("adapter");
    let path = match std::env::args().nth(1).as_deref() {
        Some("subgroup") => Path::Subgroup,
        Some("shared") => Path::SharedMemory,
        _ => Path::CooperativeMatrix,
    };
    for (t, zero_q, mask) in [(64u32, true, Mask::Strict), (64, false, Mask::Strict), (64, false, Mask::IncludeCurrent), (128, false, Mask::Strict), (100, false, Mask::Strict)] {
        let d = t.max(16).next_multiple_of(16).min(128);
        let shape = Shape::new(1, t, 1, d);
        let n = (t * d) as usize;
        let mut s = 12345u64;
        let mut r = || { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0 };
        let q: Vec<f32> = (0..n).map(|_| if zero_q { 0.0 } else { sbattn::round_to(&[r() * 2.0], Dtype::F16)[0] }).collect();
        let k: Vec<f32> = (0..n).map(|_| sbattn::round_to(&[r() * 2.0], Dtype::F16)[0]).collect();
        // one-hot values: v_j = e_(j mod d)
        let v: Vec<f32> = (0..n).map(|x| if (x / d as usize) % d as usize == x % d as usize { 1.0 } else { 0.0 }).collect();
        let input = HostInput { dtype: Dtype::F16, path, mask, remainder: HostRemainder::Return, ..HostInput::new(shape, &q, &k, &v) };
        let out = match attn.run_host_blocking(&input) { Ok(o) => o, Err(e) => { println!("T={t}: {e}"); continue; } };
        let want = reference::forward(&shape, Layout::Bthd, &q, &k, &v, mask, None, &HostRemainder::Return).unwrap();
        let a = reference::weights(&shape, Layout::Bthd, &q, &k, mask, None, 0, 0).unwrap();
        let mut worst = (0.0f64, 0usize, 0usize);
        let mut bad_rows = 0;
        for i in 0..t as usize {
            let mut row_bad = false;
            for c in 0..d as usize {
                let e = (out.o[i * d as usize + c] as f64 - want.o[i * d as usize + c]).abs();
                if e > 2e-3 { row_bad = true; }
                if !(e <= worst.0) { worst = (e, i, c); }
            }
            bad_rows += row_bad as usize;
        }
        let rem_err = out.rem.as_ref().unwrap().iter().zip(&want.rem).map(|(g, w)| (*g as f64 - w).abs()).fold(0.0, f64::max);
        println!("T={t} D={d} zero_q={zero_q} {mask:?}: max o err {:.3e} at (row {}, col {}), {bad_rows} bad rows, max rem err {rem_err:.3e}", worst.0, worst.1, worst.2);
        for i in [0usize, 1, 2, 15, 16, 17, 31, 32, 33, 63].into_iter().filter(|i| *i < t as usize).take(6) {
            let g: Vec<String> = (0..6).map(|c| format!("{:.3}", out.o[i * d as usize + c])).collect();
            let w: Vec<String> = (0..6).map(|c| format!("{:.3}", a[i * t as usize + c])).collect();
            println!("  row {i:3}: gpu [{}] ref [{}] rem {:.4} vs {:.4}", g.join(" "), w.join(" "), out.rem.as_ref().unwrap()[i], want.rem[i]);
        }
    }
}
