//! The statistics both benchmarks report (no GPU).

use sbattn_cli::stats::{quantile, summarize};

#[test]
fn summary_of_known_samples() {
    let s = summarize(&[5.0, 1.0, 4.0, 2.0, 3.0]).expect("samples");
    assert_eq!(s.n, 5);
    assert_eq!((s.min, s.median, s.max), (1.0, 3.0, 5.0));
    // Linear between closest ranks: position 0.1 * 4 = 0.4 -> 1.4; 0.9 * 4 = 3.6 -> 4.6.
    assert!((s.p10 - 1.4).abs() < 1e-12, "{}", s.p10);
    assert!((s.p90 - 4.6).abs() < 1e-12, "{}", s.p90);
    assert!((s.spread - (4.6 - 1.4) / 3.0).abs() < 1e-12);
}

#[test]
fn even_count_median_and_order_independence() {
    let a = summarize(&[4.0, 1.0, 3.0, 2.0]).expect("samples");
    let b = summarize(&[1.0, 2.0, 3.0, 4.0]).expect("samples");
    assert_eq!(a, b);
    assert_eq!(a.median, 2.5);
}

#[test]
fn one_sample_has_no_spread() {
    let s = summarize(&[0.25]).expect("a sample");
    assert_eq!(
        (s.median, s.min, s.max, s.p10, s.p90, s.spread),
        (0.25, 0.25, 0.25, 0.25, 0.25, 0.0)
    );
}

#[test]
fn empty_and_non_finite() {
    assert!(summarize(&[]).is_none());
    assert!(summarize(&[f64::NAN, f64::INFINITY]).is_none());
    let s = summarize(&[1.0, f64::NAN, 3.0]).expect("finite samples");
    assert_eq!((s.n, s.median), (2, 2.0));
}

#[test]
fn scaled_keeps_the_spread() {
    let s = summarize(&[0.001, 0.002, 0.004]).expect("samples");
    let ms = s.scaled(1e3);
    assert!((ms.median - 2.0).abs() < 1e-12 && (ms.min - 1.0).abs() < 1e-12);
    assert_eq!((ms.n, ms.spread), (s.n, s.spread));
}

#[test]
fn quantile_ends() {
    let v = [1.0, 2.0, 10.0];
    assert_eq!(quantile(&v, 0.0), 1.0);
    assert_eq!(quantile(&v, 1.0), 10.0);
    assert_eq!(quantile(&v, 0.75), 6.0);
    assert!(quantile(&[], 0.5).is_nan());
}
