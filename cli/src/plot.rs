//! `--plot FILE.png`: time per call (ms, log scale) and throughput (TFLOP/s for forward, GB/s
//! for decode, log scale) against the sequence length `T` (or the cache length), one line per
//! configuration, and the baselines of `--baselines` on the same axes (dashed, triangles).
//!
//! Drawn with plotters' bitmap backend and the DejaVu Sans subset embedded from `cli/assets/`
//! (ab_glyph): no system fonts are needed.
//!
//! # Baselines
//! A JSON object whose `results` list holds one entry per measurement:
//!
//! ```json
//! {"results": [
//!   {"impl": "sdpa", "dtype": "bf16", "median_ms": 0.399,
//!    "shape": {"batch": 4, "heads": 12, "seq_len": 4096, "head_dim": 128}},
//!   {"impl": "sb_eager", "dtype": "f16", "median_ms": 1.9,
//!    "batch": 1, "heads": 32, "kv_heads": 8, "head_dim": 128, "cache_len": 32768, "kv_bytes": 134217728}
//! ]}
//! ```
//!
//! Forward entries have `shape` (`kv_heads` optional, default `heads`); decode entries have
//! `cache_len` (`kv_bytes` optional: `2 B Hkv L D` times the dtype's size). Entries without a
//! `median_ms` (failed runs) are left out, and a baseline is drawn only where its batch, heads
//! and head dim match a measured configuration. `scripts/torch_baselines.py` (forward) and
//! `scripts/bench_decode.py` (decode) write this format; an entry without `impl` or `dtype`
//! takes the document's `bench`/`dtype` fields.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;
use serde_json::Value;

use crate::Result;
use crate::report::fmt_sig;

/// The embedded font (cli/assets/DejaVuSans-LICENSE.txt).
pub(crate) static FONT: &[u8] = include_bytes!("../assets/DejaVuSans-subset.ttf");
/// The family name every text of the plots uses.
pub(crate) const FAMILY: &str = "sans-serif";

/// Registers the embedded font with plotters, once.
pub(crate) fn register_font() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut ok = true;
    ONCE.call_once(|| {
        ok = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok();
    });
    if ok {
        Ok(())
    } else {
        Err("the embedded font did not load".into())
    }
}

/// `(B, H, Hkv, D)`: the sizes that stay fixed along one line.
pub type Family = (u32, u32, u32, u32);

/// Which benchmark a plot or baseline belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BaselineKind {
    /// x is `T`, throughput TFLOP/s.
    Forward,
    /// x is the cache length, throughput GB/s of K and V read.
    Decode,
}

impl BaselineKind {
    /// The family as settings of a line's label: `4x12xTx128` for forward; `B1`, `H32/8`,
    /// `D128` for decode (where the batch size is what usually differs).
    pub fn family_dims(self, f: Family) -> Vec<String> {
        match self {
            BaselineKind::Forward => vec![self.family_name(f)],
            BaselineKind::Decode => self.family_name(f).split(' ').map(str::to_string).collect(),
        }
    }

    /// `4x12xTx128` or `B1 H32/8 D128`.
    pub fn family_name(self, (b, h, hkv, d): Family) -> String {
        let heads = if h == hkv {
            h.to_string()
        } else {
            format!("{h}/{hkv}")
        };
        match self {
            BaselineKind::Forward => format!("{b}x{heads}xTx{d}"),
            BaselineKind::Decode => format!("B{b} H{heads} D{d}"),
        }
    }
}

/// One measured point, with the settings (`dims`) that tell its line from the others.
#[derive(Clone, Debug)]
pub struct Item {
    /// Settings other than the family (path, dtype, ...), in a fixed order.
    pub dims: Vec<String>,
    /// Sizes fixed along a line.
    pub family: Family,
    /// `T` or the cache length.
    pub x: f64,
    /// Median milliseconds.
    pub ms: f64,
    /// Throughput at the median.
    pub rate: f64,
    /// Drawn first when there are more lines than [`MAX_LINES`] (the library's own choices).
    pub preferred: bool,
}

/// Most measured lines one plot draws (the legend stays legible); the table and the JSON have
/// the rest.
pub const MAX_LINES: usize = 12;

/// One baseline point.
#[derive(Clone, Debug, PartialEq)]
pub struct Baseline {
    /// `impl dtype`.
    pub label: String,
    /// Sizes fixed along a line.
    pub family: Family,
    /// `T` or the cache length.
    pub x: f64,
    /// Median milliseconds.
    pub ms: f64,
    /// Throughput at the median.
    pub rate: f64,
}

/// One line of the plot.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// A baseline (dashed, triangles).
    pub baseline: bool,
    /// `(x, ms, rate)`, by increasing x.
    pub points: Vec<(f64, f64, f64)>,
}

/// Groups points into lines: one per distinct settings and family, labelled by the settings
/// that differ between lines (the first two when none do), at most [`MAX_LINES`] of them
/// (preferred lines first, then in order); then the baselines whose family was measured.
/// Returns the lines and how many measured lines were left out.
pub fn series(items: &[Item], baselines: &[Baseline], kind: BaselineKind) -> (Vec<Series>, usize) {
    let key = |it: &Item| {
        let mut k = it.dims.clone();
        k.extend(kind.family_dims(it.family));
        k
    };
    let keys: Vec<Vec<String>> = items.iter().map(key).collect();
    let width = keys.iter().map(Vec::len).max().unwrap_or(0);
    let varies: Vec<bool> = (0..width)
        .map(|i| keys.iter().map(|k| k.get(i)).collect::<BTreeSet<_>>().len() > 1)
        .collect();
    // A setting in parentheses (`sbattn plot --label`: which file a line is from) is always
    // said, last, after the family: `coop bn64 B8 (v4, 22:48)`; the other settings only where
    // they differ between lines (the first two when none do).
    let label = |k: &[String]| {
        let is_tag = |s: &&String| s.starts_with('(');
        let tags = k.iter().filter(is_tag);
        let varying: Vec<&String> = k
            .iter()
            .zip(&varies)
            .filter(|(s, v)| **v && !is_tag(s))
            .map(|(s, _)| s)
            .collect();
        let rest: Vec<&String> = if varying.is_empty() {
            k.iter().filter(|s| !is_tag(s)).take(2).collect()
        } else {
            varying
        };
        rest.into_iter()
            .chain(tags)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut out: Vec<(Vec<String>, bool, Series)> = Vec::new();
    for (it, k) in items.iter().zip(&keys) {
        if !(it.ms.is_finite() && it.ms > 0.0) {
            continue;
        }
        match out.iter_mut().find(|(key, _, _)| key == k) {
            Some((_, preferred, s)) => {
                *preferred |= it.preferred;
                s.points.push((it.x, it.ms, it.rate));
            }
            None => out.push((
                k.clone(),
                it.preferred,
                Series {
                    label: label(k),
                    baseline: false,
                    points: vec![(it.x, it.ms, it.rate)],
                },
            )),
        }
    }
    let families: BTreeSet<Family> = items.iter().map(|i| i.family).collect();
    // A stable sort: preferred lines first, each group in its order.
    out.sort_by_key(|(_, preferred, _)| !*preferred);
    let left_out = out.len().saturating_sub(MAX_LINES);
    let mut lines: Vec<Series> = out.into_iter().take(MAX_LINES).map(|(_, _, s)| s).collect();
    for b in baselines
        .iter()
        .filter(|b| families.contains(&b.family) && b.ms > 0.0)
    {
        // The baseline's name, and the parts of its family that tell measured lines apart.
        let fam = kind.family_dims(b.family);
        let offset = width.saturating_sub(fam.len());
        // A name ending in a tag in parentheses keeps the tag last: `read probe B8 (v4)`.
        let (name, tag) = match b.label.rfind(" (") {
            Some(i) if b.label.ends_with(')') => (&b.label[..i], Some(&b.label[i + 1..])),
            _ => (b.label.as_str(), None),
        };
        let mut parts = vec![name.to_string()];
        parts.extend(
            fam.into_iter()
                .enumerate()
                .filter(|(i, _)| varies.get(offset + i) == Some(&true))
                .map(|(_, f)| f),
        );
        parts.extend(tag.map(str::to_string));
        let label = parts.join(" ");
        match lines.iter_mut().find(|s| s.baseline && s.label == label) {
            Some(s) => s.points.push((b.x, b.ms, b.rate)),
            None => lines.push(Series {
                label,
                baseline: true,
                points: vec![(b.x, b.ms, b.rate)],
            }),
        }
    }
    for s in &mut lines {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    (lines, left_out)
}

/// Reads a baselines file (see the module documentation).
///
/// # Errors
/// The file cannot be read or is not such JSON.
pub fn read_baselines(path: &Path, kind: BaselineKind) -> Result<Vec<Baseline>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_baselines(&doc, kind).map_err(|e| format!("{}: {e}", path.display()))
}

/// `float16` and friends as the tool spells them.
fn short_dtype(d: &str) -> String {
    match d {
        "float16" | "half" => "f16".into(),
        "bfloat16" => "bf16".into(),
        "float32" | "float" => "f32".into(),
        d => d.into(),
    }
}

/// The baselines of a parsed document.
///
/// # Errors
/// No `results` list, or an entry of the wrong kind.
pub fn parse_baselines(doc: &Value, kind: BaselineKind) -> Result<Vec<Baseline>> {
    let results = doc
        .get("results")
        .and_then(Value::as_array)
        .ok_or("no `results` list")?;
    let doc_impl = doc
        .get("bench")
        .or_else(|| doc.get("tool"))
        .and_then(Value::as_str)
        .unwrap_or("baseline");
    let doc_dtype = doc.get("dtype").and_then(Value::as_str).unwrap_or("");
    let mut out = Vec::new();
    for (i, r) in results.iter().enumerate() {
        let Some(ms) = r.get("median_ms").and_then(Value::as_f64) else {
            continue;
        };
        let num = |v: Option<&Value>, what: &str| -> Result<u32> {
            v.and_then(Value::as_u64)
                .map(|x| x as u32)
                .ok_or_else(|| format!("results[{i}] has no `{what}`"))
        };
        let imp = r.get("impl").and_then(Value::as_str).unwrap_or(doc_impl);
        let dtype = short_dtype(r.get("dtype").and_then(Value::as_str).unwrap_or(doc_dtype));
        let label = format!("{imp} {dtype}").trim().to_string();
        match kind {
            BaselineKind::Forward => {
                let s = r.get("shape").ok_or_else(|| {
                    format!("results[{i}] has no `shape` (not forward baselines?)")
                })?;
                let (b, h, t, d) = (
                    num(s.get("batch"), "batch")?,
                    num(s.get("heads"), "heads")?,
                    num(s.get("seq_len"), "seq_len")?,
                    num(s.get("head_dim"), "head_dim")?,
                );
                let hkv = s
                    .get("kv_heads")
                    .map_or(Ok(h), |v| num(Some(v), "kv_heads"))?;
                let flops = 4.0 * b as f64 * h as f64 * (t as f64 * t as f64 / 2.0) * d as f64;
                out.push(Baseline {
                    label,
                    family: (b, h, hkv, d),
                    x: t as f64,
                    ms,
                    rate: flops / (ms * 1e-3) * 1e-12,
                });
            }
            BaselineKind::Decode => {
                let len = num(r.get("cache_len"), "cache_len (not decode baselines?)")?;
                let (b, h, hkv, d) = (
                    num(r.get("batch"), "batch")?,
                    num(r.get("heads"), "heads")?,
                    num(r.get("kv_heads"), "kv_heads")?,
                    num(r.get("head_dim"), "head_dim")?,
                );
                let es = match dtype.as_str() {
                    "f32" => 4.0,
                    _ => 2.0,
                };
                let bytes = r
                    .get("kv_bytes")
                    .and_then(Value::as_f64)
                    .unwrap_or(2.0 * b as f64 * hkv as f64 * len as f64 * d as f64 * es);
                out.push(Baseline {
                    label,
                    family: (b, h, hkv, d),
                    x: len as f64,
                    ms,
                    rate: bytes / (ms * 1e-3) * 1e-9,
                });
            }
        }
    }
    Ok(out)
}

/// Titles of a plot.
#[derive(Clone, Debug)]
pub struct PlotSpec {
    /// Over both panels.
    pub title: String,
    /// Under both x axes.
    pub x_label: String,
    /// Unit of the throughput panel (`TFLOP/s`, `GB/s`).
    pub rate_label: String,
}

/// A log-scale range around `values` (a factor of 2 around a single value).
fn log_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(l, h), v| (l.min(v), h.max(v)));
    if !lo.is_finite() {
        return (0.1, 10.0);
    }
    if hi / lo < 1.5 {
        (lo / 2.0, hi * 2.0)
    } else {
        (lo / 1.25, hi * 1.25)
    }
}

/// Tick positions for a log axis over `[lo, hi]`: `given` (the measured lengths) when there are
/// 2 to 12 of them in range, else 1-2-5 steps per decade (every integer step when that gives
/// fewer than three), so that a narrow range still reads.
pub fn log_ticks(lo: f64, hi: f64, given: &[f64]) -> Vec<f64> {
    let mut inside: Vec<f64> = given
        .iter()
        .copied()
        .filter(|x| *x >= lo && *x <= hi)
        .collect();
    inside.sort_by(f64::total_cmp);
    inside.dedup();
    if (2..=12).contains(&inside.len()) {
        return inside;
    }
    let decades = (lo.log10().floor() as i32)..=(hi.log10().ceil() as i32);
    let pick = |steps: &[f64]| -> Vec<f64> {
        decades
            .clone()
            .flat_map(|k| steps.iter().map(move |m| m * 10f64.powi(k)))
            .filter(|x| *x >= lo && *x <= hi)
            .collect()
    };
    let ticks = pick(&[1.0, 2.0, 5.0]);
    if ticks.len() >= 3 {
        ticks
    } else {
        pick(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
    }
}

/// A tick's text: three significant digits, trailing zeros dropped (`64`, `0.002`, `1.5`).
pub fn tick_label(v: f64) -> String {
    let trim = |m: &str| {
        if m.contains('.') {
            m.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            m.to_string()
        }
    };
    let s = fmt_sig(v, 3);
    match s.split_once('e') {
        Some((mantissa, exp)) => format!("{}e{exp}", trim(mantissa)),
        None => trim(&s),
    }
}

/// Which panels a plot draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Panels {
    /// Time per call on the left, throughput on the right (1600x700).
    Both,
    /// Time per call only (1000x700).
    Time,
    /// Throughput only (1000x700).
    Rate,
}

impl Panels {
    /// The PNG's size in pixels.
    pub fn size(self) -> (u32, u32) {
        match self {
            Panels::Both => (1600, 700),
            Panels::Time | Panels::Rate => (1000, 700),
        }
    }
}

/// Draws the two panels of `series` into a PNG at `path`; `left_out` measured lines that were
/// not drawn are said under the title.
///
/// # Errors
/// Nothing to draw, or drawing or writing the PNG failed.
pub fn draw(path: &Path, spec: &PlotSpec, series: &(Vec<Series>, usize)) -> Result<()> {
    draw_panels(path, spec, series, Panels::Both)
}

/// [`draw`] with the panels chosen.
///
/// # Errors
/// As [`draw`].
pub fn draw_panels(
    path: &Path,
    spec: &PlotSpec,
    (series, left_out): &(Vec<Series>, usize),
    panels: Panels,
) -> Result<()> {
    if series.iter().all(|s| s.points.is_empty()) {
        return Err("--plot: no result to draw".into());
    }
    register_font()?;
    let e = |e: &dyn std::fmt::Display| format!("plot {}: {e}", path.display());
    let root = BitMapBackend::new(path, panels.size()).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    // The title shrinks (down to 16 px) until it fits the width.
    let width = root.dim_in_pixel().0.saturating_sub(20);
    let size = (16..=26u32)
        .rev()
        .find(|px| {
            root.estimate_text_size(&spec.title, &(FAMILY, *px as f64).into_text_style(&root))
                .is_ok_and(|(w, _)| w <= width)
        })
        .unwrap_or(16);
    let root = root
        .titled(&spec.title, (FAMILY, size))
        .map_err(|x| e(&x))?;
    let root = if *left_out > 0 {
        let note = format!(
            "{left_out} more configurations are in the table and the JSON (at most {MAX_LINES} lines drawn)"
        );
        root.titled(&note, (FAMILY, 16)).map_err(|x| e(&x))?
    } else {
        root
    };
    let x = log_range(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
    // Times grow with the length (the upper left stays clear), throughputs too (the lower right).
    let time = |area: &Area<'_>| {
        panel(
            area,
            spec,
            "time per call (ms)",
            x,
            series,
            |p| p.1,
            SeriesLabelPosition::UpperLeft,
        )
    };
    let rate = |area: &Area<'_>| {
        panel(
            area,
            spec,
            &spec.rate_label,
            x,
            series,
            |p| p.2,
            SeriesLabelPosition::LowerRight,
        )
    };
    match panels {
        Panels::Both => {
            let (left, right) = root.split_horizontally(800);
            time(&left).map_err(|x| e(&x))?;
            rate(&right).map_err(|x| e(&x))?;
        }
        Panels::Time => time(&root).map_err(|x| e(&x))?,
        Panels::Rate => rate(&root).map_err(|x| e(&x))?,
    }
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

/// Line colours: the ten of Tableau 10 (dark enough on white, told apart by most readers),
/// then plotters' 99-colour palette.
fn line_color(i: usize) -> RGBAColor {
    const TABLEAU: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    match TABLEAU.get(i) {
        Some(&(r, g, b)) => RGBColor(r, g, b).to_rgba(),
        None => Palette99::pick(i).to_rgba(),
    }
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;
type DrawResult = std::result::Result<
    (),
    DrawingAreaErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>,
>;

/// One panel: `y(point)` against x, both log scale.
fn panel(
    area: &Area<'_>,
    spec: &PlotSpec,
    y_label: &str,
    x: (f64, f64),
    series: &[Series],
    y: fn(&(f64, f64, f64)) -> f64,
    legend: SeriesLabelPosition,
) -> DrawResult {
    let yr = log_range(series.iter().flat_map(|s| s.points.iter().map(y)));
    let xs: Vec<f64> = series
        .iter()
        .filter(|s| !s.baseline)
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    let mut chart = ChartBuilder::on(area)
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(85)
        .build_cartesian_2d(
            (x.0..x.1)
                .log_scale()
                .with_key_points(log_ticks(x.0, x.1, &xs)),
            (yr.0..yr.1)
                .log_scale()
                .with_key_points(log_ticks(yr.0, yr.1, &[])),
        )?;
    chart
        .configure_mesh()
        .x_desc(spec.x_label.as_str())
        .y_desc(y_label)
        .label_style((FAMILY, 16))
        .axis_desc_style((FAMILY, 18))
        .x_label_formatter(&|v| tick_label(*v))
        .y_label_formatter(&|v| tick_label(*v))
        .x_labels(12)
        .y_labels(12)
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = line_color(i);
        let points: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|p| y(p) > 0.0 && y(p).is_finite())
            .map(|p| (p.0, y(p)))
            .collect();
        let style = color.stroke_width(2);
        if s.baseline {
            chart
                .draw_series(DashedLineSeries::new(points.clone(), 8, 6, style))?
                .label(s.label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2))
                });
            chart.draw_series(
                points
                    .iter()
                    .map(|p| TriangleMarker::new(*p, 7, color.filled())),
            )?;
        } else {
            chart
                .draw_series(LineSeries::new(points.clone(), style))?
                .label(s.label.as_str())
                .legend(move |(x, y)| Circle::new((x + 12, y), 5, color.filled()));
            chart.draw_series(points.iter().map(|p| Circle::new(*p, 5, color.filled())))?;
        }
    }
    chart
        .configure_series_labels()
        .position(legend)
        .label_font((FAMILY, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
