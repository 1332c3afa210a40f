//! The training example's shortened run (`cargo run --example train -- --quick`) as a test:
//! associative recall learned with every attention forward and backward pass on the GPU must
//! reach the quick configuration's held-out recall (80%) within its step limit, after the
//! example's start checks (GPU attention and its gradients against the f64 reference, the
//! parameter gradients against finite differences) pass.
//!
//! The example's file is compiled into this test as a module (`#[path]`), so `cargo test` runs
//! the very code of `examples/train.rs` (its `main` unused here) on the shared test device:
//! without an adapter this test fails, unless `SBATTN_ALLOW_NO_GPU=1` asks for a skip
//! (`tests/common`). About a minute on lavapipe in the dev profile, most of it the first
//! compilation of the forward and backward kernels.
#![cfg(not(target_arch = "wasm32"))]

mod common;

#[path = "../examples/train.rs"]
#[allow(dead_code)]
mod train;

#[test]
fn quick_training_reaches_its_recall_target() {
    let attn = gpu_or_skip!();
    let cfg = train::Config::quick();
    let out = train::train(Some(attn), &cfg, &mut |line| println!("{line}")).expect("training ran");
    println!("{out:?}");
    assert!(out.attention_error <= train::ATTENTION_TOL, "GPU attention vs reference: {:e}", out.attention_error);
    assert!(out.model_grad_error <= train::MODEL_GRAD_TOL, "gradients vs finite differences: {:e}", out.model_grad_error);
    assert!(
        out.reached && out.accuracy >= cfg.target,
        "held-out recall {:.1}% after {} steps, target {:.0}%",
        out.accuracy * 100.0,
        out.steps,
        cfg.target * 100.0
    );
    // The loss fell: the last report's mean loss well below the first's (chance is ln 16 = 2.77).
    let (first, last) = (out.curve[0].1, out.curve[out.curve.len() - 1].1);
    assert!(last < 0.5 * first, "loss {first:.3} -> {last:.3}");
}
