//! What the commands print and write: markdown tables (llama-bench style: one row per
//! configuration as it finishes), JSON files, the progress bar of a sweep, number formats.

use std::io::IsTerminal;
use std::path::Path;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sbattn::{Attention, Shape};
use serde::Serialize;

use crate::Result;

/// How a column's cells are aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Numbers.
    Right,
}

/// A markdown table whose rows can be printed one at a time: every cell is padded to its
/// column's width (the header's, or more when given), so rows line up as they stream.
#[derive(Clone, Debug)]
pub struct Table {
    cols: Vec<(String, Align, usize)>,
}

impl Table {
    /// Columns by name and alignment, each as wide as its name.
    pub fn new(cols: &[(&str, Align)]) -> Table {
        Table {
            cols: cols
                .iter()
                .map(|(n, a)| (n.to_string(), *a, n.chars().count().max(3)))
                .collect(),
        }
    }

    /// Widens columns to at least `widths` (in order; missing ones unchanged).
    pub fn with_widths(mut self, widths: &[usize]) -> Table {
        for (c, w) in self.cols.iter_mut().zip(widths) {
            c.2 = c.2.max(*w);
        }
        self
    }

    /// The header line and the alignment line.
    pub fn header(&self) -> String {
        let names: Vec<String> = self.cols.iter().map(|(n, _, _)| n.clone()).collect();
        let rule: Vec<String> = self
            .cols
            .iter()
            .map(|(_, a, w)| match a {
                Align::Left => "-".repeat(*w),
                Align::Right => format!("{}:", "-".repeat(w - 1)),
            })
            .collect();
        format!("{}\n{}", self.row(&names), Self::line(&rule))
    }

    /// One row; a cell wider than its column widens only its own row.
    pub fn row(&self, cells: &[String]) -> String {
        let padded: Vec<String> = self
            .cols
            .iter()
            .enumerate()
            .map(|(i, (_, align, w))| {
                let c = cells.get(i).map_or("", String::as_str);
                match align {
                    Align::Left => format!("{c:<w$}"),
                    Align::Right => format!("{c:>w$}"),
                }
            })
            .collect();
        Self::line(&padded)
    }

    /// The whole table at once, every column as wide as its widest cell.
    pub fn render(cols: &[(&str, Align)], rows: &[Vec<String>]) -> String {
        let widths: Vec<usize> = (0..cols.len())
            .map(|i| {
                rows.iter()
                    .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let t = Table::new(cols).with_widths(&widths);
        let mut out = t.header();
        for r in rows {
            out.push('\n');
            out.push_str(&t.row(r));
        }
        out
    }

    fn line(cells: &[String]) -> String {
        format!("| {} |", cells.join(" | "))
    }
}

/// The progress bar of a sweep, on stderr, shown only when both stdout and stderr are
/// terminals; table rows go to stdout above it.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar of `len` steps.
    pub fn new(len: u64) -> Progress {
        let shown = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
        let bar = if shown {
            let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
            if let Ok(style) =
                ProgressStyle::with_template("[{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            {
                bar.set_style(style);
            }
            bar
        } else {
            ProgressBar::hidden()
        };
        Progress { bar }
    }

    /// Prints a line to stdout (above the bar).
    pub fn println(&self, line: &str) {
        self.bar.suspend(|| println!("{line}"));
    }

    /// Prints a note to stderr (above the bar).
    pub fn note(&self, line: &str) {
        self.bar.suspend(|| eprintln!("{line}"));
    }

    /// What is running now.
    pub fn set_message(&self, msg: String) {
        self.bar.set_message(msg);
    }

    /// One step done.
    pub fn inc(&self) {
        self.bar.inc(1);
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Writes `value` as pretty JSON to `path`, through a temporary file renamed over it (a run cut
/// short leaves the last complete file).
///
/// # Errors
/// I/O errors, said with the path.
pub fn save_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| format!("JSON: {e}"))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text + "\n").map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| format!("renaming {} to {}: {e}", tmp.display(), path.display()))
}

/// The command line as typed, with the program called `sbattn`.
pub fn command_line() -> String {
    std::iter::once("sbattn".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `YYYY-MM-DDTHH:MM:SSZ` of now (UTC), without a date crate.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// What the JSON files of `bench backward` and `bench prefill` start with.
#[derive(Debug, Serialize)]
pub struct DocHeader {
    /// The command (`sbattn bench ...`).
    pub tool: &'static str,
    /// UTC time of the run.
    pub date: String,
    /// The command line.
    pub command: String,
    /// What ran it.
    pub adapter: Option<AdapterJson>,
    /// The timer, described.
    pub timer: String,
    /// How the samples are summarised.
    pub statistics: &'static str,
}

impl DocHeader {
    /// The header of a run of `tool` (adapter and timer set once known).
    pub fn new(tool: &'static str) -> DocHeader {
        DocHeader { tool, date: utc_now(), command: command_line(), adapter: None, timer: String::new(), statistics: crate::forward::STATISTICS }
    }
}

/// The adapter a result was measured on, for the JSON.
#[derive(Clone, Debug, Serialize)]
pub struct AdapterJson {
    /// Adapter name.
    pub name: String,
    /// Backend.
    pub backend: String,
    /// Device type.
    pub device_type: String,
    /// Driver name and version.
    pub driver: String,
    /// Smallest subgroup size.
    pub subgroup_min_size: u32,
    /// Largest subgroup size.
    pub subgroup_max_size: u32,
    /// Features enabled on the device.
    pub features: String,
    /// Nanoseconds per timestamp tick.
    pub timestamp_period_ns: f64,
}

impl AdapterJson {
    /// What `attn` runs on.
    pub fn of(attn: &Attention) -> AdapterJson {
        let c = attn.capabilities();
        AdapterJson {
            name: c.name.clone(),
            backend: format!("{:?}", c.backend),
            device_type: format!("{:?}", c.device_type),
            driver: c.driver.clone(),
            subgroup_min_size: c.subgroup_min_size,
            subgroup_max_size: c.subgroup_max_size,
            features: format!("{:?}", c.features),
            timestamp_period_ns: attn.queue().get_timestamp_period() as f64,
        }
    }

    /// The adapter line of a command's output.
    pub fn describe(&self) -> String {
        format!(
            "adapter: {} | {} | {} | driver: {} | subgroups {}..={}",
            self.name,
            self.backend,
            self.device_type,
            self.driver,
            self.subgroup_min_size,
            self.subgroup_max_size
        )
    }

    /// The header line of a benchmark's output.
    pub fn line(&self, timer: &str) -> String {
        format!("{} | timer: {timer}", self.describe())
    }
}

/// A forward shape in the JSON.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ShapeJson {
    /// `B`.
    pub batch: u32,
    /// `H`.
    pub heads: u32,
    /// `Hkv`.
    pub kv_heads: u32,
    /// `T`.
    pub seq_len: u32,
    /// `D`.
    pub head_dim: u32,
    /// `BxHxTxD` (`H/Hkv` when they differ).
    pub name: String,
}

impl ShapeJson {
    /// The JSON of `s`.
    pub fn of(s: &Shape) -> ShapeJson {
        ShapeJson {
            batch: s.batch(),
            heads: s.heads(),
            kv_heads: s.kv_heads(),
            seq_len: s.seq_len(),
            head_dim: s.head_dim(),
            name: shape_name(s),
        }
    }
}

/// `BxHxTxD`, with `H/Hkv` for grouped-query shapes (what `--shapes` takes).
pub fn shape_name(s: &Shape) -> String {
    let heads = if s.kv_heads() == s.heads() {
        s.heads().to_string()
    } else {
        format!("{}/{}", s.heads(), s.kv_heads())
    };
    format!("{}x{heads}x{}x{}", s.batch(), s.seq_len(), s.head_dim())
}

/// A configuration that did not run, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Skip {
    /// What was skipped.
    pub what: String,
    /// Why.
    pub reason: String,
}

/// Milliseconds with four significant digits.
pub fn fmt_ms(ms: f64) -> String {
    fmt_sig(ms, 4)
}

/// `x` with `digits` significant digits, in plain notation from 1e-3 to 1e6, else scientific.
pub fn fmt_sig(x: f64, digits: usize) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    if x == 0.0 {
        return "0".into();
    }
    let mag = x.abs().log10().floor() as i32;
    if !(-3..6).contains(&mag) {
        return format!("{x:.*e}", digits.saturating_sub(1));
    }
    let decimals = (digits as i32 - 1 - mag).max(0) as usize;
    format!("{x:.decimals$}")
}

/// An error magnitude: `1.2e-6`.
pub fn fmt_err(x: f64) -> String {
    match x {
        0.0 => "0".into(),
        x if x.is_finite() => format!("{x:.1e}"),
        _ => "NaN/inf".into(),
    }
}

/// A percentage with no decimals, `-` when unknown.
pub fn fmt_pct(x: Option<f64>) -> String {
    x.filter(|x| x.is_finite())
        .map_or("-".into(), |x| format!("{x:.0}"))
}
