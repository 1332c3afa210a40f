//! Tables, number formats, timing plans, tolerances, baselines and the PNG plot (no GPU).

use sbattn::{Dtype, KernelPath};
use sbattn_cli::check::{Bound, compare};
use sbattn_cli::plot::{
    self, BaselineKind, Item, MAX_LINES, PlotSpec, log_ticks, parse_baselines, tick_label,
};
use sbattn_cli::report::{Align, Table, fmt_ms, fmt_sig, utc_now};
use sbattn_cli::timer::{Sampling, ticks_to_seconds};

#[test]
fn tables_line_up() {
    let t = Table::new(&[("name", Align::Left), ("ms", Align::Right)]).with_widths(&[6, 5]);
    assert_eq!(t.header(), "| name   |    ms |\n| ------ | ----: |");
    assert_eq!(t.row(&["a".into(), "1.5".into()]), "| a      |   1.5 |");
    let all = Table::render(
        &[("k", Align::Left), ("v", Align::Right)],
        &[vec!["long key".into(), "1".into()]],
    );
    assert_eq!(
        all,
        "| k        |   v |\n| -------- | --: |\n| long key |   1 |"
    );
}

#[test]
fn number_formats() {
    assert_eq!(fmt_ms(1.31234), "1.312");
    assert_eq!(fmt_ms(0.034567), "0.03457");
    assert_eq!(fmt_ms(123.456), "123.5");
    assert_eq!(fmt_sig(0.000123, 3), "1.23e-4");
    assert_eq!(fmt_sig(f64::NAN, 3), "-");
    assert_eq!(tick_label(64.0), "64");
    assert_eq!(tick_label(0.002), "0.002");
    assert_eq!(tick_label(0.0005), "5e-4");
    assert_eq!(tick_label(1.5), "1.5");
    let d = utc_now();
    assert!(
        d.len() == 20 && d.ends_with('Z') && d.as_bytes()[10] == b'T',
        "{d}"
    );
}

#[test]
fn sampling_plan() {
    let s = Sampling {
        iters: 10,
        warmup: 1,
        batch: 0,
        sample_ms: 10.0,
        time_limit_s: 10.0,
    };
    // 1 ms calls: 10 per sample, all 10 samples fit in the limit.
    assert_eq!(s.plan(1e-3), (10, 10));
    // 1 s calls: one per sample; 10 samples of 1 s are the limit exactly.
    assert_eq!(s.plan(1.0), (1, 10));
    // 4 s calls: only 2 fit, but never under 3.
    assert_eq!(s.plan(4.0), (1, 3));
    // Tiny calls: at most 100 per sample.
    assert_eq!(s.plan(1e-9), (100, 10));
    let fixed = Sampling { batch: 2, ..s };
    assert_eq!(fixed.plan(1e-3).0, 2);
    let secs = ticks_to_seconds(&[100, 1100, 5000, 7000], 1.0, 2).expect("increasing");
    assert!(
        (secs[0] - 500e-9).abs() < 1e-18 && (secs[1] - 1000e-9).abs() < 1e-18,
        "{secs:?}"
    );
    assert!(ticks_to_seconds(&[5, 5], 1.0, 1).is_err());
}

#[test]
fn tolerances() {
    let f32_bound = Bound::forward_o(Dtype::F32, KernelPath::Subgroup, 100, 3.0, 0.0);
    assert!((f32_bound.at(1.0) - 4e-5).abs() < 1e-15);
    let f16 = Bound::forward_o(Dtype::F16, KernelPath::SharedMemory, 100, 3.0, 0.0);
    assert!((f16.at(2.0) - (2.0 / 2048.0 + 6e-5)).abs() < 1e-15);
    let coop = Bound::forward_o(Dtype::F16, KernelPath::CooperativeMatrix, 1024, 2.0, 0.0);
    assert!((coop.abs - (1.0 / 2048.0 + 1024.0 * 2f64.powi(-25)) * 2.0).abs() < 1e-15);
    assert_eq!(
        Bound::forward_o(Dtype::F32, KernelPath::Subgroup, 1, 2.0, 1e-3).abs,
        1e-3f32 as f64 * 2.0
    );
    assert_eq!(Bound::decode_o(Dtype::F16).abs, 3e-3);

    let ok = compare(&[1.0, 2.0], &[1.0, 2.00001], &f32_bound);
    assert!(ok.pass && ok.max_abs_err > 0.0);
    let bad = compare(&[1.0, 2.1], &[1.0, 2.0], &f32_bound);
    assert!(!bad.pass && (bad.err - 0.1).abs() < 1e-6);
    let exact = compare(&[0.0, 3.0], &[0.0, 3.0], &f32_bound);
    assert!(
        exact.pass && exact.err == 0.0 && (exact.tol - 2e-5).abs() < 1e-15,
        "exact results keep the tightest bound"
    );
    let nan = compare(&[f32::NAN], &[0.0], &f32_bound);
    assert!(!nan.pass && nan.max_abs_err.is_infinite());
    assert!(
        !compare(&[1.0], &[1.0, 2.0], &f32_bound).pass,
        "length mismatch fails"
    );
    // The worst element is the one nearest its bound, not the largest error.
    let worst = compare(&[10.0001, 0.00003], &[10.0, 0.0], &f32_bound);
    assert!(
        !worst.pass && worst.err < 5e-5 && worst.max_abs_err > 9e-5,
        "{worst:?}"
    );
}

#[test]
fn baselines_of_both_scripts() {
    let forward: serde_json::Value = serde_json::from_str(
        r#"{"tool": "sbattn scripts/torch_baselines.py", "results": [
            {"impl": "sdpa", "dtype": "bf16", "shape": {"batch": 4, "heads": 12, "seq_len": 4096, "head_dim": 128}, "median_ms": 0.4},
            {"impl": "sb_eager", "dtype": "f16", "shape": {"batch": 4, "heads": 12, "seq_len": 4096, "head_dim": 128}, "median_ms": null}
        ]}"#,
    )
    .expect("json");
    let b = parse_baselines(&forward, BaselineKind::Forward).expect("forward baselines");
    assert_eq!(b.len(), 1, "entries without a time are left out");
    assert_eq!(
        (b[0].label.as_str(), b[0].family, b[0].x),
        ("sdpa bf16", (4, 12, 12, 128), 4096.0)
    );
    let flops = 4.0 * 4.0 * 12.0 * (4096.0f64 * 4096.0 / 2.0) * 128.0;
    assert!((b[0].rate - flops / 0.4e-3 * 1e-12).abs() < 1e-9);
    assert!(parse_baselines(&forward, BaselineKind::Decode).is_err());

    // scripts/bench_decode.py: no impl in older files (the document's `bench` is used).
    let decode: serde_json::Value = serde_json::from_str(
        r#"{"bench": "pytorch eager stick-breaking decode step", "dtype": "float16", "results": [
            {"batch": 1, "heads": 32, "kv_heads": 8, "head_dim": 128, "cache_len": 4096, "median_ms": 0.5, "kv_bytes": 16777216},
            {"impl": "torch eager", "dtype": "f16", "batch": 8, "heads": 32, "kv_heads": 8, "head_dim": 128, "cache_len": 4096, "median_ms": 2.0}
        ]}"#,
    )
    .expect("json");
    let d = parse_baselines(&decode, BaselineKind::Decode).expect("decode baselines");
    assert_eq!(d[0].label, "pytorch eager stick-breaking decode step f16");
    assert!((d[0].rate - 16777216.0 / 0.5e-3 * 1e-9).abs() < 1e-9);
    assert!((d[1].rate - 2.0 * 8.0 * 8.0 * 4096.0 * 128.0 * 2.0 / 2.0e-3 * 1e-9).abs() < 1e-9);
}

fn item(path: &str, dtype: &str, t: f64, ms: f64) -> Item {
    Item {
        dims: vec![path.into(), dtype.into()],
        family: (1, 2, 2, 64),
        x: t,
        ms,
        rate: 1.0 / ms,
        preferred: true,
    }
}

#[test]
fn series_labels_and_limits() {
    let items = vec![
        item("subgroup", "f16", 128.0, 1.0),
        item("subgroup", "f16", 64.0, 0.5),
        item("shared", "f16", 64.0, 0.6),
    ];
    let base = plot::Baseline {
        label: "sdpa f32".into(),
        family: (1, 2, 2, 64),
        x: 64.0,
        ms: 0.1,
        rate: 10.0,
    };
    let other = plot::Baseline {
        family: (4, 12, 12, 128),
        ..base.clone()
    };
    let (lines, left_out) = plot::series(&items, &[base, other], BaselineKind::Forward);
    assert_eq!(left_out, 0);
    let labels: Vec<&str> = lines.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(
        labels,
        vec!["subgroup", "shared", "sdpa f32"],
        "only what differs; the unmeasured family's baseline left out"
    );
    assert_eq!(
        lines[0].points.iter().map(|p| p.0).collect::<Vec<_>>(),
        vec![64.0, 128.0],
        "sorted by x"
    );
    assert!(lines[2].baseline);

    let many: Vec<Item> = (0..20)
        .map(|i| Item {
            preferred: i == 19,
            ..item(&format!("c{i}"), "f32", 64.0, 1.0)
        })
        .collect();
    let (lines, left_out) = plot::series(&many, &[], BaselineKind::Forward);
    assert_eq!((lines.len(), left_out), (MAX_LINES, 20 - MAX_LINES));
    assert_eq!(lines[0].label, "c19", "preferred lines first");
}

#[test]
fn log_ticks_read() {
    assert_eq!(log_ticks(50.0, 160.0, &[64.0, 128.0]), vec![64.0, 128.0]);
    assert_eq!(
        log_ticks(0.04, 3.0, &[]),
        vec![0.05, 0.1, 0.2, 0.5, 1.0, 2.0]
    );
    let narrow = log_ticks(0.0012, 0.0035, &[]);
    assert!(narrow.len() >= 2 && narrow.contains(&0.002), "{narrow:?}");
}

#[test]
fn plot_writes_a_png() {
    let dir = std::env::temp_dir().join(format!("sbattn-cli-plot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("plot.png");
    let items = vec![
        item("subgroup", "f16", 64.0, 0.5),
        item("subgroup", "f16", 128.0, 1.3),
        item("shared", "f32", 128.0, 1.1),
    ];
    let spec = PlotSpec {
        title: "test: auto→subgroup µs ≤ 1".into(),
        x_label: "sequence length T".into(),
        rate_label: "TFLOP/s".into(),
    };
    plot::draw(
        &path,
        &spec,
        &plot::series(&items, &[], BaselineKind::Forward),
    )
    .expect("drawn");
    let bytes = std::fs::read(&path).expect("written");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&bytes[12..16], b"IHDR");
    let (w, h) = (
        u32::from_be_bytes(bytes[16..20].try_into().unwrap()),
        u32::from_be_bytes(bytes[20..24].try_into().unwrap()),
    );
    assert_eq!((w, h), (1600, 700));
    assert!(
        bytes.len() > 20_000,
        "a plot with text and lines, not a blank image ({} bytes)",
        bytes.len()
    );
    assert!(
        plot::draw(&path, &spec, &(Vec::new(), 0)).is_err(),
        "nothing to draw is an error"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn skipped_cases_group_by_kind_and_reason() {
    let s = |w: &str, r: &str| (w.to_string(), r.to_string());
    let lines = sbattn_cli::check::skip_lines(&[
        s(
            "forward f16 coop D24",
            "needs a head dim that is a multiple of 16 (got 24); tensor cores",
        ),
        s(
            "forward f16 coop D17",
            "needs a head dim that is a multiple of 16 (got 17); tensor cores",
        ),
        s(
            "forward f16 coop D24",
            "needs a head dim that is a multiple of 16 (got 24); tensor cores",
        ),
        s("forward f16 coop D32", "needs tensor cores"),
        s("decode f16 subgroup", "16 lanes do not fit"),
    ]);
    assert_eq!(
        lines,
        vec![
            "forward f16 coop D24, D17: needs a head dim that is a multiple of 16; tensor cores",
            "forward f16 coop D32: needs tensor cores",
            "decode f16 subgroup: 16 lanes do not fit",
        ]
    );
}
