//! `sbattn heatmap`: the attention weights of one head, computed on the GPU
//! ([`sbattn::Attention::weights`] through `weights_host`), checked against the f64 reference,
//! drawn next to the softmax weights of the same `q` and `k` (computed here on the CPU, in f64,
//! under the same mask and scale), with the remainder `rem_i` of each row as a strip beside the
//! stick-breaking matrix and a colour scale (log by default, `--linear`).
//!
//! `q` and `k` are `N(0, 1)` from `--seed`, rounded to `--dtype`; the logits are
//! `scale q_i . k_j` (`--scale`, default `1/sqrt(D)`). Keys a query does not see are white.
//! Drawn with plotters' bitmap backend and the embedded font of [`crate::plot`].

use std::ops::Range;
use std::path::Path;
use std::time::Instant;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use sbattn::reference::{self, Rng};
use sbattn::{HostInput, HostRemainder, Mask, ShaderChecks, Shape, round_to};

use crate::args::HeatmapArgs;
use crate::plot::{FAMILY, register_font};
use crate::report::{AdapterJson, fmt_sig};
use crate::{Outcome, Result};

/// The PNG's size in pixels.
pub const SIZE: (u32, u32) = (1640, 820);

/// How weights map to colours.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ColorScale {
    /// `log10(w)` from `log10(floor)` (and below) to 0.
    Log {
        /// The smallest weight told apart.
        floor: f64,
    },
    /// `w` from 0 to 1.
    Linear,
}

impl ColorScale {
    /// Where `w` falls on the scale, in `[0, 1]`.
    pub fn position(self, w: f64) -> f64 {
        let p = match self {
            ColorScale::Log { floor } => {
                if w <= floor {
                    0.0
                } else {
                    1.0 - w.log10() / floor.log10()
                }
            }
            ColorScale::Linear => w,
        };
        if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) }
    }

    /// The colour bar's ticks: `(weight, label)`, from the bottom up.
    pub fn ticks(self) -> Vec<(f64, String)> {
        match self {
            ColorScale::Log { floor } => {
                let lo = floor.log10().ceil() as i32;
                let mut t: Vec<(f64, String)> = (lo..=0)
                    .map(|k| {
                        let label = match k {
                            0 => "1".to_string(),
                            -1 => "0.1".to_string(),
                            -2 => "0.01".to_string(),
                            k => format!("1e{k}"),
                        };
                        (10f64.powi(k), label)
                    })
                    .collect();
                if (floor.log10() - lo as f64).abs() > 1e-9 {
                    t.insert(0, (floor, format!("≤{}", crate::plot::tick_label(floor))));
                } else {
                    t[0].1 = format!("≤{}", t[0].1);
                }
                t
            }
            ColorScale::Linear => [0.0, 0.25, 0.5, 0.75, 1.0]
                .iter()
                .map(|&w| (w, crate::plot::tick_label(w)))
                .collect(),
        }
    }
}

/// Viridis (matplotlib's), sampled at nine points and interpolated: dark for small weights,
/// yellow for large ones, ordered in lightness for every common kind of colour vision.
pub fn viridis(p: f64) -> RGBColor {
    const STOPS: [(u8, u8, u8); 9] = [
        (68, 1, 84),
        (71, 45, 123),
        (59, 82, 139),
        (44, 114, 142),
        (33, 145, 140),
        (40, 174, 128),
        (94, 201, 98),
        (173, 220, 48),
        (253, 231, 37),
    ];
    let x = p.clamp(0.0, 1.0) * (STOPS.len() - 1) as f64;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f64;
    let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * f).round() as u8;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// The softmax weights of one head, `T x T` row-major, in f64: row `i` over the keys `mask`
/// lets it see (a row that sees none, row 0 under the strict mask, is all zero).
pub fn softmax_weights(q: &[f32], k: &[f32], t: u32, d: u32, scale: f32, mask: Mask) -> Vec<f64> {
    let (t, d) = (t as usize, d as usize);
    let mut a = vec![0.0f64; t * t];
    for i in 0..t {
        let vis = mask.visible(i as u32) as usize;
        if vis == 0 {
            continue;
        }
        let qi = &q[i * d..(i + 1) * d];
        let z: Vec<f64> = (0..vis)
            .map(|j| {
                let kj = &k[j * d..(j + 1) * d];
                scale as f64
                    * qi.iter()
                        .zip(kj)
                        .map(|(x, y)| *x as f64 * *y as f64)
                        .sum::<f64>()
            })
            .collect();
        let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = z.iter().map(|z| (z - max).exp()).sum();
        for (j, zj) in z.iter().enumerate() {
            a[i * t + j] = (zj - max).exp() / sum;
        }
    }
    a
}

/// How far back the weights look: over the rows that see a key, the mean of
/// `sum_j a_ij (i - j) / sum_j a_ij` (in tokens; rows whose weights sum to 0 are skipped).
pub fn mean_distance(a: &[f64], t: u32) -> f64 {
    let t = t as usize;
    let (mut total, mut rows) = (0.0, 0usize);
    for i in 0..t {
        let row = &a[i * t..(i + 1) * t];
        let mass: f64 = row.iter().sum();
        if mass > 0.0 {
            total += row
                .iter()
                .enumerate()
                .map(|(j, w)| w * (i as f64 - j as f64))
                .sum::<f64>()
                / mass;
            rows += 1;
        }
    }
    if rows == 0 { 0.0 } else { total / rows as f64 }
}

/// What one heatmap picture shows.
pub struct Picture<'a> {
    /// Over everything.
    pub title: String,
    /// Sequence length.
    pub t: u32,
    /// Which keys each row sees (the others are white).
    pub mask: Mask,
    /// Stick-breaking weights, `T x T` row-major.
    pub stick: &'a [f64],
    /// `rem_i` per row.
    pub rem: &'a [f64],
    /// Softmax weights, `T x T` row-major.
    pub softmax: &'a [f64],
    /// The colour scale.
    pub scale: ColorScale,
}

/// A tick step for `t` cells: about eight ticks, at 1, 2, 4, 5, 8, 10, 16, 20, 25, 32, ...
fn tick_step(t: u32) -> u32 {
    let want = (t as f64 / 8.0).max(1.0);
    let mut candidates: Vec<u32> = Vec::new();
    let mut p = 1u32;
    while p < 1 << 20 {
        candidates.extend([p, 2 * p, 5 * p / 2, 5 * p].into_iter().filter(|c| *c >= 1));
        p *= 10;
    }
    candidates.extend((0..20).map(|k| 1u32 << k));
    candidates.sort_unstable();
    candidates
        .into_iter()
        .find(|c| *c as f64 >= want)
        .unwrap_or(t)
}

type Root<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;
type DrawError = DrawingAreaErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>;

/// Fills the pixels `xr x yr` of `root` with a `rows x cols` matrix: each pixel shows the
/// largest visible value of the cells it covers (so that a thin diagonal survives when there
/// are more cells than pixels), white where none is visible.
fn fill_cells(
    root: &Root<'_>,
    (xr, yr): (Range<i32>, Range<i32>),
    (rows, cols): (usize, usize),
    value: impl Fn(usize, usize) -> Option<f64>,
    scale: ColorScale,
) -> std::result::Result<(), DrawError> {
    let (w, h) = (
        (xr.end - xr.start).max(1) as usize,
        (yr.end - yr.start).max(1) as usize,
    );
    let span = |p: usize, n: usize, cells: usize| {
        let a = p * cells / n;
        (a, ((p + 1) * cells / n).max(a + 1).min(cells))
    };
    for py in 0..h {
        let (i0, i1) = span(py, h, rows);
        for px in 0..w {
            let (j0, j1) = span(px, w, cols);
            let mut best: Option<f64> = None;
            for i in i0..i1 {
                for j in j0..j1 {
                    if let Some(v) = value(i, j) {
                        best = Some(best.map_or(v, |b: f64| b.max(v)));
                    }
                }
            }
            let color = best.map_or(WHITE, |v| viridis(scale.position(v)));
            root.draw_pixel((xr.start + px as i32, yr.start + py as i32), &color)?;
        }
    }
    Ok(())
}

/// One matrix panel: axes (key j across, query i down), the cells; returns the pixel ranges of
/// its cells.
fn matrix_panel(
    root: &Root<'_>,
    area: &Root<'_>,
    caption: &str,
    pic: &Picture<'_>,
    values: &[f64],
    right_margin: i32,
) -> std::result::Result<(Range<i32>, Range<i32>), DrawError> {
    // Integer coordinates: a tick marks the left edge of key j's column, the top edge of query
    // i's row (y counts up from the bottom, `t - i`).
    let t = pic.t as i32;
    let step = tick_step(pic.t) as usize;
    let ticks: Vec<i32> = (0..t).step_by(step).collect();
    let y_ticks: Vec<i32> = ticks.iter().map(|i| t - i).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FAMILY, 20))
        .margin(12)
        .margin_right(right_margin)
        .x_label_area_size(50)
        .y_label_area_size(64)
        .build_cartesian_2d(
            (0..t).with_key_points(ticks),
            (0..t).with_key_points(y_ticks),
        )?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("key j")
        .y_desc("query i")
        .label_style((FAMILY, 15))
        .axis_desc_style((FAMILY, 17))
        .x_label_formatter(&|x| format!("{x}"))
        .y_label_formatter(&|y| format!("{}", t - y))
        .draw()?;
    let range = chart.plotting_area().get_pixel_range();
    let n = pic.t as usize;
    let mask = pic.mask;
    fill_cells(
        root,
        range.clone(),
        (n, n),
        |i, j| ((j as u32) < mask.visible(i as u32)).then(|| values[i * n + j]),
        pic.scale,
    )?;
    Ok(range)
}

/// Draws `pic` into a PNG at `path` ([`SIZE`]).
///
/// # Errors
/// Drawing or writing the PNG failed.
pub fn draw(path: &Path, pic: &Picture<'_>) -> Result<()> {
    register_font()?;
    let e = |x: &dyn std::fmt::Display| format!("heatmap {}: {x}", path.display());
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let body = root.titled(&pic.title, (FAMILY, 22)).map_err(|x| e(&x))?;
    let (left, rest) = body.split_horizontally(770);
    let (middle, right) = rest.split_horizontally(690);
    let text = |s: &str, px: i32, pos: (i32, i32), h: HPos, v: VPos| {
        let style = (FAMILY, px).into_text_style(&root).pos(Pos::new(h, v));
        root.draw_text(s, &style, pos)
    };
    // Stick-breaking, with the remainder strip in its right margin.
    let (xr, yr) = matrix_panel(
        &root,
        &left,
        "stick-breaking A_ij (GPU)",
        pic,
        pic.stick,
        76,
    )
    .map_err(|x| e(&x))?;
    let strip = (xr.end + 18)..(xr.end + 48);
    fill_cells(
        &root,
        (strip.clone(), yr.clone()),
        (pic.t as usize, 1),
        |i, _| Some(pic.rem[i]),
        pic.scale,
    )
    .map_err(|x| e(&x))?;
    root.draw(&Rectangle::new(
        [(strip.start - 1, yr.start - 1), (strip.end, yr.end)],
        BLACK.stroke_width(1),
    ))
    .map_err(|x| e(&x))?;
    text(
        "rem_i",
        15,
        ((strip.start + strip.end) / 2, yr.end + 8),
        HPos::Center,
        VPos::Top,
    )
    .map_err(|x| e(&x))?;
    // Softmax.
    let (_, syr) = matrix_panel(
        &root,
        &middle,
        "softmax (CPU, same logits and mask)",
        pic,
        pic.softmax,
        20,
    )
    .map_err(|x| e(&x))?;
    debug_assert_eq!(syr, yr, "both panels share the vertical extent");
    // The colour bar, level with the matrices.
    let x0 = right.get_pixel_range().0.start + 24;
    let bar = x0..x0 + 30;
    let h = (yr.end - yr.start).max(1);
    for py in yr.clone() {
        let p = 1.0 - (py - yr.start) as f64 / (h - 1).max(1) as f64;
        for px in bar.clone() {
            root.draw_pixel((px, py), &viridis(p)).map_err(|x| e(&x))?;
        }
    }
    root.draw(&Rectangle::new(
        [(bar.start - 1, yr.start - 1), (bar.end, yr.end)],
        BLACK.stroke_width(1),
    ))
    .map_err(|x| e(&x))?;
    for (w, label) in pic.scale.ticks() {
        let y = yr.end - 1 - (pic.scale.position(w) * (h - 1) as f64).round() as i32;
        root.draw(&PathElement::new(
            vec![(bar.end, y), (bar.end + 6, y)],
            BLACK,
        ))
        .map_err(|x| e(&x))?;
        text(&label, 15, (bar.end + 10, y), HPos::Left, VPos::Center).map_err(|x| e(&x))?;
    }
    let scale_name = match pic.scale {
        ColorScale::Log { .. } => "weight (log)",
        ColorScale::Linear => "weight",
    };
    text(
        scale_name,
        16,
        (bar.start, yr.start - 10),
        HPos::Left,
        VPos::Bottom,
    )
    .map_err(|x| e(&x))?;
    text(
        "white: not seen",
        14,
        (bar.start, yr.end + 8),
        HPos::Left,
        VPos::Top,
    )
    .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

/// Runs `sbattn heatmap`: fails (exit status 1) when the GPU's weights or remainders differ
/// from the reference by more than `2e-5 (1 + |w|)` (the bound of tests/weights.rs).
///
/// # Errors
/// No adapter, f16 without `SHADER_F16`, a library error, or the PNG cannot be written.
pub fn run(a: &HeatmapArgs) -> Result<Outcome> {
    let attn = crate::gpu::context(ShaderChecks::Trusted)?;
    let dtype = a.dtype.dtype();
    if dtype == sbattn::Dtype::F16 && !attn.capabilities().f16() {
        return Err("--dtype f16: this device lacks SHADER_F16".into());
    }
    let (t, d) = (a.t, a.head_dim);
    let shape = Shape::new().with_seq_len(t).with_head_dim(d);
    let scale = shape.resolve_scale(a.scale).map_err(|e| e.to_string())?;
    let mut rng = Rng::new(a.seed);
    let n = (t * d) as usize;
    let q = round_to(&rng.normals(n, 1.0), dtype);
    let k = round_to(&rng.normals(n, 1.0), dtype);
    let v = vec![0.0f32; n];
    let mask = a.mask.mask();
    let input = HostInput::new(shape, &q, &k, &v)
        .with_dtype(dtype)
        .with_mask(mask)
        .with_scale(Some(scale));
    println!("{}", AdapterJson::of(&attn).describe());
    let start = Instant::now();
    let w = attn
        .weights_host_blocking(&input, 0, 0)
        .map_err(|e| e.to_string())?;
    let first_ms = start.elapsed().as_secs_f64() * 1e3;

    let want = reference::weights(&input, 0, 0).map_err(|e| e.to_string())?;
    let want_rem = reference::forward(&input.with_remainder(HostRemainder::Return))
        .map_err(|e| e.to_string())?
        .rem;
    let worst = |got: &[f32], want: &[f64]| {
        got.iter()
            .zip(want)
            .fold((0.0f64, true), |(m, ok), (g, w)| {
                let err = (*g as f64 - w).abs();
                (m.max(err), ok && err <= 2e-5 * (1.0 + w.abs()))
            })
    };
    let (err_a, ok_a) = worst(&w.a, &want);
    let (err_rem, ok_rem) = worst(&w.rem, &want_rem);
    let stick: Vec<f64> = w.a.iter().map(|x| *x as f64).collect();
    let rem: Vec<f64> = w.rem.iter().map(|x| *x as f64).collect();
    let softmax = softmax_weights(&q, &k, t, d, scale, mask);
    let mask_name = match mask {
        Mask::Strict => "strict mask (j < i)",
        _ => "current included (j <= i)",
    };
    let dtype_name = crate::gpu::dtype_name(dtype);
    println!(
        "T {t}, D {d}, {dtype_name}, {mask_name}, scale {}, q and k ~ N(0, 1) seed {}: weights on the GPU in {} ms (first call: the kernel's compile included)",
        fmt_sig(scale as f64, 3),
        a.seed,
        fmt_sig(first_ms, 3)
    );
    println!(
        "max |A - reference| = {}, max |rem - reference| = {} (tolerance 2e-5 (1 + |w|)): {}",
        fmt_sig(err_a, 2),
        fmt_sig(err_rem, 2),
        if ok_a && ok_rem { "ok" } else { "FAILED" }
    );
    let mean_rem = rem.iter().sum::<f64>() / t as f64;
    println!(
        "mean distance to the attended keys: stick-breaking {} tokens, softmax {} tokens; mean rem {}",
        fmt_sig(mean_distance(&stick, t), 3),
        fmt_sig(mean_distance(&softmax, t), 3),
        fmt_sig(mean_rem, 3)
    );
    let scale_kind = if a.linear {
        ColorScale::Linear
    } else {
        ColorScale::Log { floor: a.floor }
    };
    let pic = Picture {
        title: format!(
            "attention weights of one head: T {t}, D {d}, {dtype_name}, {mask_name}, scale {}, q, k ~ N(0, 1) (seed {}) on {}",
            fmt_sig(scale as f64, 3),
            a.seed,
            attn.capabilities().name
        ),
        t,
        mask,
        stick: &stick,
        rem: &rem,
        softmax: &softmax,
        scale: scale_kind,
    };
    draw(&a.out, &pic)?;
    eprintln!("wrote {}", a.out.display());
    Ok(if ok_a && ok_rem {
        Outcome::Passed
    } else {
        Outcome::Failed("the GPU's weights differ from the reference".into())
    })
}
