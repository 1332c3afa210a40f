//! `sbattn plot`: its arguments, what it reads from saved JSON, the lines and labels it draws,
//! and a PNG (no GPU).

use clap::Parser;
use sbattn_cli::args::{Cli, Command, PanelsArg, parse_family};
use sbattn_cli::plot::{BaselineKind, Panels, parse_baselines};
use sbattn_cli::replot::{self, Filter, SavedDoc, baseline_wanted, kind_of};
use serde_json::{Value, json};

fn forward_result(t: u32, path: &str, bn: Option<u32>, checks: &str, ms: f64) -> Value {
    json!({
        "shape": {"batch": 4, "heads": 12, "kv_heads": 12, "seq_len": t, "head_dim": 128, "name": "x"},
        "dtype": "f16", "path_requested": path, "path": path, "coop_block_n": bn, "eps": 0.0,
        "inputs": "random", "checks": checks, "median_ms": ms, "tflops_median": 1.0 / ms
    })
}

fn doc(json: Value, label: Option<&str>) -> SavedDoc {
    SavedDoc {
        path: "x.json".into(),
        kind: kind_of(&json).expect("kind"),
        label: label.map(str::to_string),
        json,
    }
}

#[test]
fn arguments() {
    let cli = Cli::parse_from([
        "sbattn",
        "plot",
        "a.json",
        "b.json",
        "--label",
        "v3, 22:06",
        "--label",
        "v4",
        "--out",
        "x.png",
        "--baselines",
        "t.json",
        "--baseline-only",
        "sdpa bf16,sb_fla",
        "--family",
        "4x12x128,1x32/8x128",
        "--checks",
        "default",
        "--panels",
        "rate",
    ]);
    let Command::Plot(a) = cli.command else {
        panic!("not plot")
    };
    assert_eq!(a.files.len(), 2);
    assert_eq!(
        a.labels,
        vec!["v3, 22:06", "v4"],
        "--label repeats, in order"
    );
    assert_eq!(a.baseline_only, vec!["sdpa bf16", "sb_fla"]);
    assert_eq!(a.family, vec![(4, 12, 12, 128), (1, 32, 8, 128)]);
    assert_eq!(a.panels, PanelsArg::Rate);
    assert!(
        Cli::try_parse_from(["sbattn", "plot", "--out", "x.png"]).is_err(),
        "a JSON file is required"
    );
    assert!(parse_family("4x12").is_err() && parse_family("0x1x1").is_err());
}

#[test]
fn forward_lines_are_tagged_by_file() {
    let old = doc(
        json!({"tool": "sbattn bench forward", "date": "2026-12-01T22:06:27Z", "timer": "timestamp",
               "adapter": {"name": "NVIDIA H200"},
               "results": [forward_result(1024, "coop", Some(64), "default", 0.4),
                           forward_result(4096, "coop", Some(64), "default", 4.2),
                           forward_result(4096, "coop", Some(64), "clamped", 5.0),
                           forward_result(4096, "subgroup", None, "default", 12.0)]}),
        Some("v3, 22:06"),
    );
    let new = doc(
        json!({"tool": "sbattn bench forward", "date": "2026-12-01T22:48:15Z", "timer": "timestamp",
               "adapter": {"name": "NVIDIA H200"},
               "results": [forward_result(1024, "coop", Some(64), "default", 0.33),
                           forward_result(4096, "coop", Some(64), "default", 3.2)]}),
        Some("v4, 22:48"),
    );
    let torch = parse_baselines(
        &json!({"results": [
            {"impl": "sdpa", "dtype": "bf16", "median_ms": 0.37, "shape": {"batch": 4, "heads": 12, "seq_len": 4096, "head_dim": 128}},
            {"impl": "sdpa_fwd_bwd", "dtype": "bf16", "median_ms": 1.5, "shape": {"batch": 4, "heads": 12, "seq_len": 4096, "head_dim": 128}}
        ]}),
        BaselineKind::Forward,
    )
    .expect("baselines");
    let torch: Vec<_> = torch
        .into_iter()
        .filter(|b| baseline_wanted(&b.label, &["sdpa bf16".into()]))
        .collect();
    assert_eq!(torch.len(), 1, "sdpa_fwd_bwd is not `sdpa`");
    let filter = Filter {
        checks: vec!["default".into()],
        ..Default::default()
    };
    let ((lines, left_out), spec) =
        replot::build(&[old, new], &torch, &filter, Panels::Both, true, None).expect("built");
    assert_eq!(left_out, 0);
    let labels: Vec<&str> = lines.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(
        labels,
        vec![
            "coop bn64 (v3, 22:06)",
            "subgroup (v3, 22:06)",
            "coop bn64 (v4, 22:48)",
            "sdpa bf16"
        ]
    );
    assert_eq!(lines[0].points.len(), 2, "the clamped run is filtered out");
    assert!(
        spec.title.contains("NVIDIA H200")
            && spec.title.contains("B4 H12 D128")
            && spec.title.contains("2026-12-01")
    );
}

#[test]
fn decode_lines_and_probe() {
    let r = |b: u32, len: u32, ms: f64| {
        json!({"batch": b, "heads": 32, "kv_heads": 8, "head_dim": 128, "cache_len": len, "dtype": "f16",
               "checks": "default", "path_requested": "auto", "lanes_forced": null, "vec_forced": null,
               "keys_forced": null, "splits_forced": null, "kv_bytes": 2.0 * b as f64 * 8.0 * len as f64 * 256.0,
               "median_ms": ms, "gbps_median": 2.0 * b as f64 * 8.0 * len as f64 * 256.0 / (ms * 1e6), "error": null})
    };
    let d = doc(
        json!({"tool": "sbattn bench decode", "read_probe": {"gbps": 4000.0},
               "results": [r(1, 4096, 0.03), r(1, 32768, 0.07), r(8, 4096, 0.08), r(8, 32768, 0.38)]}),
        Some("v3"),
    );
    let (both, _) = replot::build(
        std::slice::from_ref(&d),
        &[],
        &Filter::default(),
        Panels::Both,
        true,
        None,
    )
    .expect("built");
    let labels: Vec<&str> = both.0.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(
        labels,
        vec![
            "B1 (v3)",
            "B8 (v3)",
            "read probe B1 (v3)",
            "read probe B8 (v3)"
        ]
    );
    let (rate, _) =
        replot::build(&[d], &[], &Filter::default(), Panels::Rate, true, None).expect("built");
    let probe: Vec<_> = rate.0.iter().filter(|s| s.baseline).collect();
    assert_eq!(
        probe.len(),
        1,
        "one probe line per file when only the rate is drawn"
    );
    assert_eq!(probe[0].label, "read probe (v3)");
    assert!(probe[0].points.iter().all(|p| p.2 == 4000.0));
}

#[test]
fn kinds_do_not_mix_and_empty_is_an_error() {
    let f = doc(
        json!({"tool": "sbattn bench forward", "results": [forward_result(64, "shared", None, "default", 1.0)]}),
        None,
    );
    let d = doc(json!({"tool": "sbattn bench decode", "results": []}), None);
    assert_eq!(d.kind, BaselineKind::Decode);
    assert!(
        replot::build(
            &[f.clone(), d],
            &[],
            &Filter::default(),
            Panels::Both,
            true,
            None
        )
        .is_err()
    );
    let none = Filter {
        families: vec![(1, 1, 1, 1)],
        ..Default::default()
    };
    assert!(replot::build(&[f], &[], &none, Panels::Both, true, None).is_err());
    assert!(kind_of(&json!({"results": []})).is_err());
}

#[test]
fn writes_a_png() {
    let dir = std::env::temp_dir().join(format!("sbattn-cli-replot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let json_path = dir.join("fwd.json");
    let body = json!({"tool": "sbattn bench forward", "results": [
        forward_result(1024, "coop", None, "default", 0.4), forward_result(4096, "coop", None, "default", 4.0)]});
    std::fs::write(&json_path, body.to_string()).expect("written");
    let png = dir.join("out.png");
    let cli = Cli::parse_from([
        "sbattn",
        "plot",
        json_path.to_str().unwrap(),
        "--panels",
        "time",
        "--out",
        png.to_str().unwrap(),
    ]);
    let Command::Plot(a) = cli.command else {
        panic!("not plot")
    };
    assert_eq!(replot::run(&a), Ok(sbattn_cli::Outcome::Passed));
    let bytes = std::fs::read(&png).expect("png");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    assert_eq!(w, 1000, "one panel");
    let too_many = Cli::parse_from([
        "sbattn",
        "plot",
        json_path.to_str().unwrap(),
        "--label",
        "a",
        "--label",
        "b",
        "--out",
        png.to_str().unwrap(),
    ]);
    let Command::Plot(a) = too_many.command else {
        panic!("not plot")
    };
    assert!(replot::run(&a).is_err(), "more labels than files");
    std::fs::remove_dir_all(&dir).ok();
}
