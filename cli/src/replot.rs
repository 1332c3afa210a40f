//! `sbattn plot`: a PNG from saved JSON, without running anything. The files are what
//! `sbattn bench forward --json` or `sbattn bench decode --json` wrote (one or more, all of one
//! kind, each optionally named by `--label`), plus baselines in the format of
//! [`crate::plot`] (`--baselines`, scripts/torch_baselines.py or scripts/bench_decode.py).
//!
//! Forward files give time per call and TFLOP/s against `T`, one line per path (and tiles,
//! dtype, eps, inputs, checks: whatever differs between lines) per file; decode files give time
//! per step and GB/s of K and V against the cache length, one line per batch size (and forced
//! tuning, dtype, checks) per file, with each file's read probe as a dashed line. The lines and
//! the drawing are those of `--plot` ([`crate::plot::series`], [`crate::plot::draw_panels`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::args::{PanelsArg, PlotArgs};
use crate::plot::{self, Baseline, BaselineKind, Family, Item, Panels, PlotSpec, Series};
use crate::{Outcome, Result};

/// What `sbattn plot` keeps of the saved results.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only these families (`(B, H, Hkv, D)`); empty: all.
    pub families: Vec<Family>,
    /// Only these runtime-check names (`default`, `clamped`, ...); empty: all.
    pub checks: Vec<String>,
    /// Only these dtypes (`f16`, `f32`); empty: all.
    pub dtypes: Vec<String>,
}

impl Filter {
    fn keeps(&self, family: Family, checks: &str, dtype: &str) -> bool {
        (self.families.is_empty() || self.families.contains(&family))
            && (self.checks.is_empty() || self.checks.iter().any(|c| c == checks))
            && (self.dtypes.is_empty() || self.dtypes.iter().any(|d| d == dtype))
    }
}

/// One saved benchmark document.
#[derive(Clone, Debug)]
pub struct SavedDoc {
    /// Where it was read from.
    pub path: PathBuf,
    /// Which benchmark wrote it.
    pub kind: BaselineKind,
    /// The `--label` given for it.
    pub label: Option<String>,
    /// The parsed JSON.
    pub json: Value,
}

/// Which benchmark wrote `doc`: its `tool` field, else the shape of its first result.
///
/// # Errors
/// Neither says.
pub fn kind_of(doc: &Value) -> Result<BaselineKind> {
    match doc.get("tool").and_then(Value::as_str) {
        Some("sbattn bench forward") => return Ok(BaselineKind::Forward),
        Some("sbattn bench decode") => return Ok(BaselineKind::Decode),
        _ => {}
    }
    let first = doc
        .get("results")
        .and_then(Value::as_array)
        .and_then(|r| r.first());
    match first {
        Some(r) if r.get("cache_len").is_some() => Ok(BaselineKind::Decode),
        Some(r) if r.get("shape").is_some() => Ok(BaselineKind::Forward),
        _ => Err("not the JSON of `sbattn bench forward` or `sbattn bench decode` (no `tool`, no results)".into()),
    }
}

/// Reads a saved document.
///
/// # Errors
/// The file cannot be read, is not JSON, or is not a benchmark's.
pub fn read_doc(path: &Path, label: Option<String>) -> Result<SavedDoc> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let json: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let kind = kind_of(&json).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(SavedDoc {
        path: path.to_path_buf(),
        kind,
        label,
        json,
    })
}

fn results(doc: &Value) -> &[Value] {
    doc.get("results")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn u32_of(v: &Value, key: &str) -> Option<u32> {
    v.get(key).and_then(Value::as_u64).map(|x| x as u32)
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The plotted points of a forward document, each tagged with `(label)` when it has one.
/// Results without a time (failed runs) are left out.
pub fn forward_items(doc: &SavedDoc, filter: &Filter) -> Vec<Item> {
    let mut out = Vec::new();
    for r in results(&doc.json) {
        let (Some(ms), Some(s)) = (r.get("median_ms").and_then(Value::as_f64), r.get("shape"))
        else {
            continue;
        };
        let (Some(b), Some(h), Some(t), Some(d)) = (
            u32_of(s, "batch"),
            u32_of(s, "heads"),
            u32_of(s, "seq_len"),
            u32_of(s, "head_dim"),
        ) else {
            continue;
        };
        let family = (b, h, u32_of(s, "kv_heads").unwrap_or(h), d);
        let (dtype, checks) = (str_of(r, "dtype"), str_of(r, "checks"));
        if !filter.keeps(family, checks, dtype) {
            continue;
        }
        // As `bench forward --plot` names them (cli/src/forward.rs).
        let mut path = match str_of(r, "path_requested") {
            "auto" => format!("auto→{}", str_of(r, "path")),
            _ => str_of(r, "path").to_string(),
        };
        if let Some(n) = r.get("coop_block_n").and_then(Value::as_u64) {
            path.push_str(&format!(" bn{n}"));
        }
        let eps = r.get("eps").and_then(Value::as_f64).unwrap_or(0.0);
        let mut dims = vec![
            path,
            dtype.to_string(),
            format!("eps {eps}"),
            str_of(r, "inputs").to_string(),
            format!("checks {checks}"),
        ];
        dims.extend(doc.label.as_ref().map(|l| format!("({l})")));
        let rate = r
            .get("tflops_median")
            .and_then(Value::as_f64)
            .unwrap_or_else(|| {
                4.0 * b as f64 * h as f64 * (t as f64 * t as f64 / 2.0) * d as f64 / (ms * 1e-3)
                    * 1e-12
            });
        out.push(Item {
            dims,
            family,
            x: t as f64,
            ms,
            rate,
            preferred: true,
        });
    }
    out
}

/// The plotted points of a decode document (as [`forward_items`]).
pub fn decode_items(doc: &SavedDoc, filter: &Filter) -> Vec<Item> {
    let mut out = Vec::new();
    for r in results(&doc.json) {
        if r.get("error").is_some_and(|e| !e.is_null()) {
            continue;
        }
        let Some(ms) = r.get("median_ms").and_then(Value::as_f64) else {
            continue;
        };
        let (Some(b), Some(h), Some(hkv), Some(d), Some(len)) = (
            u32_of(r, "batch"),
            u32_of(r, "heads"),
            u32_of(r, "kv_heads"),
            u32_of(r, "head_dim"),
            u32_of(r, "cache_len"),
        ) else {
            continue;
        };
        let family = (b, h, hkv, d);
        let (dtype, checks) = (str_of(r, "dtype"), str_of(r, "checks"));
        if !filter.keeps(family, checks, dtype) {
            continue;
        }
        // The forced choices only, as `bench decode --plot` names them (cli/src/decode.rs).
        let mut forced: Vec<String> = Vec::new();
        if !matches!(str_of(r, "path_requested"), "auto" | "") {
            forced.push(str_of(r, "path_requested").to_string());
        }
        let num = |k: &str| r.get(k).and_then(Value::as_u64);
        forced.extend(num("lanes_forced").map(|v| format!("P{v}")));
        forced.extend(
            r.get("vec_forced")
                .and_then(Value::as_str)
                .map(str::to_string),
        );
        forced.extend(num("keys_forced").map(|v| format!("U{v}")));
        forced.extend(num("splits_forced").map(|v| format!("s{v}")));
        let config = if forced.is_empty() {
            "auto".to_string()
        } else {
            forced.join(" ")
        };
        let mut dims = vec![config, dtype.to_string(), format!("checks {checks}")];
        dims.extend(doc.label.as_ref().map(|l| format!("({l})")));
        let es = if dtype == "f32" { 4.0 } else { 2.0 };
        let bytes = r
            .get("kv_bytes")
            .and_then(Value::as_f64)
            .unwrap_or(2.0 * b as f64 * hkv as f64 * len as f64 * d as f64 * es);
        let rate = r
            .get("gbps_median")
            .and_then(Value::as_f64)
            .unwrap_or(bytes / (ms * 1e-3) * 1e-9);
        out.push(Item {
            dims,
            family,
            x: len as f64,
            ms,
            rate,
            preferred: true,
        });
    }
    out
}

/// The read probe of a decode document (`read_probe.gbps`), if it has one.
pub fn probe_gbps(doc: &SavedDoc) -> Option<f64> {
    doc.json
        .get("read_probe")
        .and_then(|p| p.get("gbps"))
        .and_then(Value::as_f64)
        .filter(|g| *g > 0.0)
}

/// Whether baseline `label` (`impl dtype`) is one of `only` (`impl` or `impl dtype`; empty:
/// every baseline).
pub fn baseline_wanted(label: &str, only: &[String]) -> bool {
    only.is_empty()
        || only.iter().any(|o| {
            let o = o.trim();
            label == o || label.split(' ').next() == Some(o)
        })
}

/// `yyyy-mm-dd` and `hh:mm` of a document's `date` (`2026-12-01T22:48:15Z`).
fn date_of(doc: &Value) -> Option<(String, String)> {
    let d = doc.get("date")?.as_str()?;
    let (day, time) = d.split_once('T')?;
    Some((day.to_string(), time.get(..5)?.to_string()))
}

/// Everything `sbattn plot` draws, from parsed documents: the lines (with how many measured
/// ones were left out) and the titles.
///
/// # Errors
/// Documents of both kinds, or nothing left to draw.
pub fn build(
    docs: &[SavedDoc],
    baselines: &[Baseline],
    filter: &Filter,
    panels: Panels,
    with_probe: bool,
    title: Option<&str>,
) -> Result<((Vec<Series>, usize), PlotSpec)> {
    let kind = docs.first().ok_or("no JSON file given")?.kind;
    if let Some(other) = docs.iter().find(|d| d.kind != kind) {
        return Err(format!(
            "{} is a {} benchmark, {} a {} one: plot one kind at a time",
            docs[0].path.display(),
            name(kind),
            other.path.display(),
            name(other.kind)
        ));
    }
    let mut items = Vec::new();
    let mut probes: Vec<(Option<&str>, f64, Vec<Item>)> = Vec::new();
    for d in docs {
        let its = match kind {
            BaselineKind::Forward => forward_items(d, filter),
            BaselineKind::Decode => decode_items(d, filter),
        };
        if let (true, Some(g)) = (with_probe && kind == BaselineKind::Decode, probe_gbps(d)) {
            probes.push((d.label.as_deref(), g, its.clone()));
        }
        items.extend(its);
    }
    if items.is_empty() {
        return Err("nothing to draw: no result of the files passes the filters".into());
    }
    let mut baselines = baselines.to_vec();
    let tag = |l: Option<&str>| l.map_or(String::new(), |l| format!(" ({l})"));
    let many_dtypes = items
        .iter()
        .map(|i| &i.dims[1])
        .collect::<BTreeSet<_>>()
        .len()
        > 1;
    // The read probe: per batch size (its time differs) when times are drawn, else one line
    // per file (the bandwidth is the same for all).
    let mut probe_lines = Vec::new();
    for (label, gbps, its) in &probes {
        let mut seen = BTreeSet::new();
        let mut points = Vec::new();
        for it in its {
            let bytes = it.rate * 1e9 * it.ms * 1e-3;
            let dtype = if many_dtypes {
                format!(", {}", it.dims[1])
            } else {
                String::new()
            };
            let name = format!("read probe{dtype}{}", tag(*label));
            if panels == Panels::Rate {
                if seen.insert((name.clone(), it.x.to_bits())) {
                    points.push((name, (it.x, bytes / (gbps * 1e9) * 1e3, *gbps)));
                }
            } else if seen.insert((format!("{name} {:?}", it.family), it.x.to_bits())) {
                baselines.push(Baseline {
                    label: name,
                    family: it.family,
                    x: it.x,
                    ms: bytes / (gbps * 1e9) * 1e3,
                    rate: *gbps,
                });
            }
        }
        for (name, p) in points {
            match probe_lines
                .iter_mut()
                .find(|s: &&mut Series| s.label == name)
            {
                Some(s) => s.points.push(p),
                None => probe_lines.push(Series {
                    label: name,
                    baseline: true,
                    points: vec![p],
                }),
            }
        }
    }
    let (mut lines, left_out) = plot::series(&items, &baselines, kind);
    for mut s in probe_lines {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
        lines.push(s);
    }
    let spec = spec(docs, &items, kind, title);
    Ok(((lines, left_out), spec))
}

fn name(kind: BaselineKind) -> &'static str {
    match kind {
        BaselineKind::Forward => "forward",
        BaselineKind::Decode => "decode",
    }
}

/// The titles: the benchmark, the adapters, the one family if there is one, the dates.
fn spec(docs: &[SavedDoc], items: &[Item], kind: BaselineKind, title: Option<&str>) -> PlotSpec {
    let (x_label, rate_label) = match kind {
        BaselineKind::Forward => ("sequence length T", "TFLOP/s"),
        BaselineKind::Decode => ("cache length (tokens)", "GB/s of K and V"),
    };
    let title = title.map(str::to_string).unwrap_or_else(|| {
        let adapters: BTreeSet<&str> = docs
            .iter()
            .filter_map(|d| {
                d.json
                    .get("adapter")
                    .and_then(|a| a.get("name"))
                    .and_then(Value::as_str)
            })
            .collect();
        let timers: BTreeSet<&str> = docs
            .iter()
            .filter_map(|d| d.json.get("timer").and_then(Value::as_str))
            .collect();
        let days: BTreeSet<String> = docs
            .iter()
            .filter_map(|d| date_of(&d.json))
            .map(|d| d.0)
            .collect();
        let families: BTreeSet<Family> = items.iter().map(|i| i.family).collect();
        let mut t = format!(
            "sbattn {} on {}",
            name(kind),
            adapters.into_iter().collect::<Vec<_>>().join(", ")
        );
        match (kind, families.len()) {
            (BaselineKind::Forward, 1) => {
                let (b, h, hkv, d) = *families.first().expect("one");
                let heads = if h == hkv {
                    format!("{h}")
                } else {
                    format!("{h}/{hkv}")
                };
                t.push_str(&format!(", B{b} H{heads} D{d}"));
            }
            (BaselineKind::Decode, _) => {
                let dims: BTreeSet<(u32, u32, u32)> =
                    families.iter().map(|f| (f.1, f.2, f.3)).collect();
                if let [(h, hkv, d)] = dims.into_iter().collect::<Vec<_>>()[..] {
                    t.push_str(&format!(", H{h}/{hkv} D{d}, one new token"));
                }
            }
            _ => {}
        }
        let timers = timers.into_iter().collect::<Vec<_>>().join("/");
        let days = days.into_iter().collect::<Vec<_>>().join(", ");
        t.push_str(&format!(" ({timers} timer, median; {days})"));
        t
    });
    PlotSpec {
        title,
        x_label: x_label.into(),
        rate_label: rate_label.into(),
    }
}

/// Runs `sbattn plot`.
///
/// # Errors
/// Unreadable files, more labels than files, documents of both kinds, nothing to draw, or the
/// PNG cannot be written.
pub fn run(a: &PlotArgs) -> Result<Outcome> {
    if a.labels.len() > a.files.len() {
        return Err(format!(
            "{} --label for {} JSON file(s): one per file at most",
            a.labels.len(),
            a.files.len()
        ));
    }
    let docs = a
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| read_doc(f, a.labels.get(i).cloned()))
        .collect::<Result<Vec<_>>>()?;
    let kind = docs[0].kind;
    let mut baselines = Vec::new();
    for f in &a.baselines {
        baselines.extend(
            plot::read_baselines(f, kind)?
                .into_iter()
                .filter(|b| baseline_wanted(&b.label, &a.baseline_only)),
        );
    }
    let filter = Filter {
        families: a.family.clone(),
        checks: a
            .checks
            .iter()
            .map(|c| crate::gpu::checks_name(c.checks()).to_string())
            .collect(),
        dtypes: a
            .dtypes
            .iter()
            .map(|d| crate::gpu::dtype_name(d.dtype()).to_string())
            .collect(),
    };
    let panels = match a.panels {
        PanelsArg::Both => Panels::Both,
        PanelsArg::Time => Panels::Time,
        PanelsArg::Rate => Panels::Rate,
    };
    let (series, spec) = build(
        &docs,
        &baselines,
        &filter,
        panels,
        !a.no_probe,
        a.title.as_deref(),
    )?;
    for s in &series.0 {
        eprintln!(
            "{} {}: {} point(s)",
            if s.baseline { "baseline" } else { "line" },
            s.label,
            s.points.len()
        );
    }
    plot::draw_panels(&a.out, &spec, &series, panels)?;
    eprintln!("wrote {}", a.out.display());
    Ok(Outcome::Passed)
}
