//! `sbattn heatmap` (the binary, on a tiny T: needs the GPU adapter, lavapipe in CI) and the
//! tool's pipeline cache (where it lives, that the binary writes it there and nowhere with
//! `--no-pipeline-cache`); its pure parts (softmax, distances, colour scale) without a GPU.

use std::path::{Path, PathBuf};
use std::process::Command;

use sbattn::Mask;
use sbattn_cli::gpu::{CACHE_DIR_VAR, NO_CACHE_VAR, resolve_cache_dir};
use sbattn_cli::heatmap::{ColorScale, SIZE, mean_distance, softmax_weights, viridis};

#[test]
fn softmax_rows_and_distances() {
    let (t, d) = (5u32, 3u32);
    let q: Vec<f32> = (0..15).map(|i| (i as f32 * 0.7).sin()).collect();
    let k: Vec<f32> = (0..15).map(|i| (i as f32 * 1.3).cos()).collect();
    let strict = softmax_weights(&q, &k, t, d, 0.5, Mask::Strict);
    assert!(strict[..5].iter().all(|w| *w == 0.0), "row 0 sees no key");
    for i in 1..5usize {
        let row = &strict[i * 5..(i + 1) * 5];
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12, "row {i}");
        assert!(
            row[i..].iter().all(|w| *w == 0.0),
            "row {i} sees only j < i"
        );
    }
    let with_current = softmax_weights(&q, &k, t, d, 0.5, Mask::IncludeCurrent);
    assert!(
        (with_current[0] - 1.0).abs() < 1e-12,
        "row 0 sees itself only"
    );
    // All weight on the previous key: one token back on every row that sees a key.
    let mut prev = vec![0.0; 16];
    for i in 1..4 {
        prev[i * 4 + i - 1] = 0.5;
    }
    assert!((mean_distance(&prev, 4) - 1.0).abs() < 1e-12);
}

#[test]
fn colour_scale() {
    let log = ColorScale::Log { floor: 1e-4 };
    assert_eq!(log.position(1.0), 1.0);
    assert_eq!(log.position(1e-4), 0.0);
    assert_eq!(log.position(0.0), 0.0);
    assert!((log.position(1e-2) - 0.5).abs() < 1e-12);
    let ticks = log.ticks();
    assert_eq!(
        ticks.iter().map(|t| t.1.as_str()).collect::<Vec<_>>(),
        ["≤1e-4", "1e-3", "0.01", "0.1", "1"]
    );
    assert_eq!(ColorScale::Log { floor: 3e-3 }.ticks()[0].1, "≤0.003");
    assert_eq!(ColorScale::Linear.position(0.25), 0.25);
    assert_eq!(ColorScale::Linear.position(f64::NAN), 0.0);
    assert_eq!(
        (viridis(0.0).0, viridis(1.0).0),
        (68, 253),
        "viridis runs from purple to yellow"
    );
}

#[test]
fn pipeline_cache_folder() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    };
    let home = env(&[("HOME", "/home/u")]);
    let default = if cfg!(target_os = "macos") {
        "/home/u/Library/Caches/sbattn"
    } else {
        "/home/u/.cache/sbattn"
    };
    if !cfg!(windows) {
        assert_eq!(
            resolve_cache_dir(false, None, home),
            Some(PathBuf::from(default))
        );
        assert_eq!(
            resolve_cache_dir(
                false,
                None,
                env(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/x")])
            ),
            Some("/x/sbattn".into())
        );
        assert_eq!(
            resolve_cache_dir(
                false,
                None,
                env(&[("HOME", "/h"), ("XDG_CACHE_HOME", "relative")])
            ),
            Some(PathBuf::from(if cfg!(target_os = "macos") {
                "/h/Library/Caches/sbattn"
            } else {
                "/h/.cache/sbattn"
            })),
            "a relative XDG_CACHE_HOME is ignored, as the spec says"
        );
    }
    assert_eq!(
        resolve_cache_dir(true, None, home),
        None,
        "--no-pipeline-cache"
    );
    assert_eq!(
        resolve_cache_dir(false, Some(Path::new("/d")), home),
        Some("/d".into())
    );
    assert_eq!(
        resolve_cache_dir(false, None, env(&[(NO_CACHE_VAR, "1"), ("HOME", "/h")])),
        None
    );
    assert_eq!(
        resolve_cache_dir(false, Some(Path::new("/d")), env(&[(NO_CACHE_VAR, "yes")])),
        None,
        "the variable wins over the folder"
    );
    assert!(
        resolve_cache_dir(false, None, env(&[(NO_CACHE_VAR, "0"), ("HOME", "/h")])).is_some(),
        "0 keeps it on"
    );
    assert_eq!(
        resolve_cache_dir(false, None, env(&[(CACHE_DIR_VAR, "/e"), ("HOME", "/h")])),
        Some("/e".into())
    );
    assert_eq!(
        resolve_cache_dir(false, None, env(&[])),
        None,
        "no home, no folder"
    );
}

/// Runs the binary; `None` when the GPU tests are skipped (`SBATTN_ALLOW_NO_GPU=1`, no adapter).
fn sbattn(args: &[&str]) -> Option<std::process::Output> {
    let out = Command::new(env!("CARGO_BIN_EXE_sbattn"))
        .args(args)
        .env_remove(NO_CACHE_VAR)
        .env_remove(CACHE_DIR_VAR)
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success()
        && stderr.contains("no usable GPU adapter")
        && std::env::var("SBATTN_ALLOW_NO_GPU").as_deref() == Ok("1")
    {
        eprintln!("SKIPPED (SBATTN_ALLOW_NO_GPU=1): {stderr}");
        return None;
    }
    assert!(
        out.status.success(),
        "sbattn {args:?}: {}\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    Some(out)
}

/// Width and height of a PNG file.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).expect("png written");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

#[test]
fn heatmap_binary_writes_a_png_and_its_pipeline_cache() {
    let dir = std::env::temp_dir().join(format!("sbattn-cli-heatmap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (png, cache) = (dir.join("h.png"), dir.join("cache"));
    let (png_s, cache_s) = (png.to_str().unwrap(), cache.to_str().unwrap());
    let Some(out) = sbattn(&[
        "heatmap",
        "--t",
        "12",
        "--head-dim",
        "8",
        "--seed",
        "3",
        "--out",
        png_s,
        "--pipeline-cache-dir",
        cache_s,
    ]) else {
        return;
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("T 12, D 8") && stdout.contains(": ok"),
        "{stdout}"
    );
    assert_eq!(png_size(&png), SIZE);
    let has_cache = sbattn::Attention::with_default_adapter_blocking().is_ok_and(|a| {
        a.capabilities()
            .features
            .contains(wgpu::Features::PIPELINE_CACHE)
    });
    let saved: Vec<_> = std::fs::read_dir(&cache)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    if has_cache {
        assert_eq!(saved.len(), 1, "one cache file: {saved:?}");
        let name = saved[0].file_name().unwrap().to_string_lossy().to_string();
        assert!(
            name.starts_with("sbattn-") && name.ends_with(".bin"),
            "{name}"
        );
    } else {
        assert!(saved.is_empty(), "{saved:?}");
    }

    // f16, the other mask, the linear scale; no pipeline cache at all.
    std::fs::remove_file(&png).expect("removed");
    let off = dir.join("off");
    let Some(out) = sbattn(&[
        "heatmap",
        "--t",
        "9",
        "--head-dim",
        "4",
        "--dtype",
        "f16",
        "--mask",
        "include-current",
        "--linear",
        "--out",
        png_s,
        "--no-pipeline-cache",
        "--pipeline-cache-dir",
        off.to_str().unwrap(),
    ]) else {
        return;
    };
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"));
    assert_eq!(png_size(&png), SIZE);
    assert!(!off.exists(), "--no-pipeline-cache writes nothing");
    std::fs::remove_dir_all(&dir).ok();
}
