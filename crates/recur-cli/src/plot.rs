//! Charts for the CLI, written as PNG and SVG side by side: line charts (learning curves,
//! gradient norms), x-y paths and point clouds (the ball task), and a heatmap (confusion matrices).
//!
//! Drawing goes through `plotters` with its pure-Rust backends, so nothing here needs a C library
//! at build time. Text is rendered with a TrueType font read from the system at run time (see
//! [`font_available`]); where none is found, charts are still written, without any text (no title,
//! labels or legend), rather than failing.
//!
//! This module only draws what it is given: it computes no statistics and chooses no data.

// Shared by several commands, none of which uses every kind of chart.
#![allow(dead_code)]

use anyhow::{bail, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Pixel size of line and path charts.
const CHART_SIZE: (u32, u32) = (800, 500);
/// The font family name under which the system font is registered with plotters.
const FAMILY: &str = "sans-serif";
/// Where a sans-serif TrueType font is looked for (Debian/Ubuntu, Fedora, Arch, macOS); the
/// environment variable `RECUR_FONT` names another file and is tried first.
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/Library/Fonts/Arial.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

/// Distinct colours for series without an explicit one (colour-blind friendly, Okabe-Ito order).
const PALETTE: &[[u8; 3]] = &[
    [0, 114, 178],
    [213, 94, 0],
    [0, 158, 115],
    [204, 121, 167],
    [230, 159, 0],
    [86, 180, 233],
    [0, 0, 0],
    [240, 228, 66],
];

/// How a series is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    /// Points joined by a line, in the given order.
    Line,
    /// Separate dots.
    Dots,
}

/// One named series of (x, y) points.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub mark: Mark,
    /// RGB colour; `None` takes the palette's next colour.
    pub color: Option<[u8; 3]>,
}

impl Series {
    /// A line through `points`.
    pub fn line(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            points,
            mark: Mark::Line,
            color: None,
        }
    }

    /// Dots at `points`.
    pub fn dots(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            mark: Mark::Dots,
            ..Series::line(name, points)
        }
    }

    /// The same series in the given colour.
    pub fn with_color(mut self, rgb: [u8; 3]) -> Self {
        self.color = Some(rgb);
        self
    }
}

/// Where the legend sits inside the plot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Legend {
    #[default]
    UpperRight,
    UpperLeft,
    LowerLeft,
    LowerRight,
}

/// A chart of several series over shared axes.
#[derive(Clone, Debug, Default)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Logarithmic y axis (base 10); points with y <= 0 are left out.
    pub log_y: bool,
    /// Same scale on both axes (for spatial paths).
    pub equal_aspect: bool,
    pub legend: Legend,
    pub series: Vec<Series>,
    /// Labels written under the curves at these x positions, each with a faint vertical line
    /// (e.g. the digits a decoder emitted, at their frames); a band below the data holds them.
    pub marks: Vec<(f64, String)>,
}

impl Chart {
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
    ) -> Self {
        Chart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            ..Chart::default()
        }
    }
    pub fn with_log_y(mut self, on: bool) -> Self {
        self.log_y = on;
        self
    }
    pub fn with_equal_aspect(mut self, on: bool) -> Self {
        self.equal_aspect = on;
        self
    }
    pub fn with_legend(mut self, at: Legend) -> Self {
        self.legend = at;
        self
    }
    pub fn push(&mut self, s: Series) {
        self.series.push(s);
    }
    pub fn with_marks(mut self, marks: Vec<(f64, String)>) -> Self {
        self.marks = marks;
        self
    }
}

/// A matrix of values drawn as coloured cells, e.g. a confusion matrix (rows: true class,
/// columns: predicted class). Each row is shaded relative to its own sum, so that rare classes
/// read as clearly as frequent ones; the cell text shows the raw value.
#[derive(Clone, Debug, Default)]
pub struct Heatmap {
    pub title: String,
    /// What the rows and the columns are, e.g. "true" and "predicted".
    pub row_axis: String,
    pub col_axis: String,
    pub row_labels: Vec<String>,
    pub col_labels: Vec<String>,
    /// Row-major (rows x cols).
    pub values: Vec<f64>,
}

/// Whether a font was found, so that charts carry text. Loaded once, on first use.
pub fn font_available() -> bool {
    static LOADED: OnceLock<bool> = OnceLock::new();
    *LOADED.get_or_init(|| {
        let env = std::env::var_os("RECUR_FONT").map(PathBuf::from);
        let candidates = env.into_iter().chain(FONT_PATHS.iter().map(PathBuf::from));
        for p in candidates {
            if let Ok(bytes) = std::fs::read(&p) {
                // plotters keeps fonts for the whole process: hand it a buffer that lives as long.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font(FAMILY, FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// `<stem>.<ext>` (appended, so that a dot inside the stem stays).
pub fn with_ext(stem: &Path, ext: &str) -> PathBuf {
    let mut s = stem.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// Fails unless the folder that `file` would be written into exists, so that a long run can
/// stop before its work rather than after it. The error names the file.
pub fn check_dir(file: &Path) -> Result<()> {
    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        bail!(
            "cannot write {}: folder {} does not exist",
            file.display(),
            parent.display()
        );
    }
    Ok(())
}

/// `<stem>.png` and `<stem>.svg`.
pub fn outputs(stem: &Path) -> [PathBuf; 2] {
    [with_ext(stem, "png"), with_ext(stem, "svg")]
}

/// Writes `chart` to `<stem>.png` and `<stem>.svg`; returns the two paths.
pub fn write_chart(chart: &Chart, stem: &Path) -> Result<[PathBuf; 2]> {
    write_both(stem, CHART_SIZE, Figure::Chart(chart))
}

/// Writes `map` to `<stem>.png` and `<stem>.svg`; returns the two paths.
pub fn write_heatmap(map: &Heatmap, stem: &Path) -> Result<[PathBuf; 2]> {
    let (r, c) = (map.row_labels.len(), map.col_labels.len());
    if r == 0 || c == 0 || map.values.len() != r * c {
        bail!(
            "heatmap needs rows x cols values: {} row labels, {} column labels, {} values",
            r,
            c,
            map.values.len()
        );
    }
    let layout = HeatLayout::new(map);
    write_both(stem, layout.size, Figure::Heat(map, &layout))
}

type DrawResult = std::result::Result<(), String>;

/// What [`write_both`] draws, once per backend.
enum Figure<'a> {
    Chart(&'a Chart),
    Heat(&'a Heatmap, &'a HeatLayout),
}

impl Figure<'_> {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>, text: bool) -> DrawResult {
        match self {
            Figure::Chart(c) => draw_chart(area, c, text),
            Figure::Heat(m, l) => draw_heatmap(area, m, l, text),
        }
    }
}

fn write_both(stem: &Path, size: (u32, u32), fig: Figure) -> Result<[PathBuf; 2]> {
    let text = font_available();
    let [png, svg] = outputs(stem);
    // Opening the file first gives an error that names it; plotters' own says less.
    std::fs::File::create(&png).with_context(|| format!("cannot write {}", png.display()))?;
    {
        let area = BitMapBackend::new(&png, size).into_drawing_area();
        fig.draw(&area, text)
            .map_err(|e| anyhow::anyhow!("cannot draw {}: {e}", png.display()))?;
        area.present()
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", png.display()))?;
    }
    let mut buf = String::new();
    {
        let area = SVGBackend::with_string(&mut buf, size).into_drawing_area();
        fig.draw(&area, text)
            .map_err(|e| anyhow::anyhow!("cannot draw {}: {e}", svg.display()))?;
        area.present()
            .map_err(|e| anyhow::anyhow!("cannot draw {}: {e}", svg.display()))?;
    }
    std::fs::write(&svg, buf).with_context(|| format!("cannot write {}", svg.display()))?;
    Ok([png, svg])
}

fn rgb(c: [u8; 3]) -> RGBColor {
    RGBColor(c[0], c[1], c[2])
}

/// Data range with a margin; a degenerate range is widened so that the axis is drawable.
fn padded(lo: f64, hi: f64, frac: f64) -> (f64, f64) {
    if !(lo.is_finite() && hi.is_finite()) {
        return (0.0, 1.0);
    }
    if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
        let d = 0.5 * lo.abs().max(1.0);
        return (lo - d, hi + d);
    }
    let m = (hi - lo) * frac;
    (lo - m, hi + m)
}

/// The points of a series as drawn: non-finite values dropped; y in log10 on a log axis.
fn drawn_points(s: &Series, log_y: bool) -> Vec<(f64, f64)> {
    s.points
        .iter()
        .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log_y || *y > 0.0))
        .map(|&(x, y)| (x, if log_y { y.log10() } else { y }))
        .collect()
}

/// The axes' ranges (x0, x1, y0, y1): the points' bounds, padded, and with an equal aspect one
/// axis widened so that a unit spans as many of the plot's (width, height) pixels on both.
fn ranges(chart: &Chart, pts: &[Vec<(f64, f64)>], plot: (u32, u32)) -> (f64, f64, f64, f64) {
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in pts.iter().flatten() {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    let (mut x0, mut x1) = padded(x0, x1, 0.02);
    let (mut y0, mut y1) = padded(y0, y1, 0.05);
    if chart.equal_aspect {
        let (pw, ph) = (plot.0 as f64, plot.1 as f64);
        let (sx, sy) = ((x1 - x0) / pw, (y1 - y0) / ph);
        if sx > sy {
            let c = 0.5 * (y0 + y1);
            let half = 0.5 * sx * ph;
            (y0, y1) = (c - half, c + half);
        } else {
            let c = 0.5 * (x0 + x1);
            let half = 0.5 * sy * pw;
            (x0, x1) = (c - half, c + half);
        }
    }
    (x0, x1, y0, y1)
}

fn draw_chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    chart: &Chart,
    text: bool,
) -> DrawResult {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    area.fill(&WHITE).map_err(err)?;
    let pts: Vec<Vec<(f64, f64)>> = chart
        .series
        .iter()
        .map(|s| drawn_points(s, chart.log_y))
        .collect();
    let (w, h) = area.dim_in_pixel();
    let (left, bottom, top) = if text {
        (70u32, 45u32, 40u32)
    } else {
        (10, 10, 10)
    };
    let plot = (w.saturating_sub(left + 20), h.saturating_sub(bottom + top));
    let (x0, x1, mut y0, y1) = ranges(chart, &pts, plot);
    // the marks' band under the data
    let band = if chart.marks.is_empty() {
        0.0
    } else {
        0.12 * (y1 - y0)
    };
    y0 -= band;
    let mut b = ChartBuilder::on(area);
    b.margin(10).margin_right(20);
    if text {
        b.caption(&chart.title, (FAMILY, 20))
            .x_label_area_size(bottom)
            .y_label_area_size(left);
    }
    let mut ctx = b.build_cartesian_2d(x0..x1, y0..y1).map_err(err)?;
    if text {
        let log_y = chart.log_y;
        let fmt_y = move |v: &f64| {
            if log_y && (v - v.round()).abs() < 1e-9 {
                format!("1e{}", v.round())
            } else if log_y {
                format!("{:.1e}", 10f64.powf(*v))
            } else {
                trim(*v)
            }
        };
        ctx.configure_mesh()
            .x_desc(chart.x_label.as_str())
            .y_desc(chart.y_label.as_str())
            .x_label_formatter(&|v| trim(*v))
            .y_label_formatter(&fmt_y)
            .label_style((FAMILY, 13))
            .axis_desc_style((FAMILY, 15))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(err)?;
    } else {
        ctx.configure_mesh()
            .disable_x_mesh()
            .disable_y_mesh()
            .x_labels(0)
            .y_labels(0)
            .draw()
            .map_err(err)?;
    }
    let mut auto = 0usize;
    for (s, p) in chart.series.iter().zip(pts) {
        let color = rgb(s.color.unwrap_or_else(|| {
            auto += 1;
            PALETTE[(auto - 1) % PALETTE.len()]
        }));
        let anno = match s.mark {
            Mark::Line => ctx
                .draw_series(LineSeries::new(p, color.stroke_width(2)))
                .map_err(err)?,
            Mark::Dots => ctx
                .draw_series(PointSeries::of_element(
                    p,
                    3,
                    color.filled(),
                    &|c, sz, st| EmptyElement::at(c) + Circle::new((0, 0), sz, st),
                ))
                .map_err(err)?,
        };
        if text && !s.name.is_empty() {
            let mark = s.mark;
            anno.label(s.name.as_str())
                .legend(move |(x, y)| -> DynElement<DB, (i32, i32)> {
                    match mark {
                        Mark::Line => {
                            PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                                .into_dyn()
                        }
                        Mark::Dots => Circle::new((x + 9, y), 3, color.filled()).into_dyn(),
                    }
                });
        }
    }
    for (x, label) in &chart.marks {
        ctx.draw_series(std::iter::once(PathElement::new(
            vec![(*x, y0 + band), (*x, y1)],
            RGBColor(150, 150, 150).stroke_width(1),
        )))
        .map_err(err)?;
        if text {
            let style = (FAMILY, 18)
                .into_font()
                .color(&BLACK)
                .pos(text_anchor::Pos::new(
                    text_anchor::HPos::Center,
                    text_anchor::VPos::Center,
                ));
            ctx.draw_series(std::iter::once(Text::new(
                label.clone(),
                (*x, y0 + 0.5 * band),
                style,
            )))
            .map_err(err)?;
        }
    }
    if text && chart.series.iter().any(|s| !s.name.is_empty()) {
        ctx.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font((FAMILY, 13))
            .position(match chart.legend {
                Legend::UpperRight => SeriesLabelPosition::UpperRight,
                Legend::UpperLeft => SeriesLabelPosition::UpperLeft,
                Legend::LowerLeft => SeriesLabelPosition::LowerLeft,
                Legend::LowerRight => SeriesLabelPosition::LowerRight,
            })
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

/// A tick label without trailing zeros: 0.5, 100, 1e-3.
fn trim(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e6).contains(&a) {
        return format!("{v:.1e}");
    }
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// Pixel geometry of a heatmap.
struct HeatLayout {
    size: (u32, u32),
    cell: u32,
    left: u32,
    top: u32,
    show_values: bool,
}

impl HeatLayout {
    fn new(map: &Heatmap) -> Self {
        let (r, c) = (map.row_labels.len() as u32, map.col_labels.len() as u32);
        let cell = (640 / r.max(c)).clamp(10, 48);
        let longest = |v: &[String]| v.iter().map(|s| s.chars().count()).max().unwrap_or(0) as u32;
        let left = 40 + 8 * longest(&map.row_labels).min(20);
        let top = 70 + 8 * longest(&map.col_labels).min(20).min(3);
        HeatLayout {
            size: (left + c * cell + 20, top + r * cell + 20),
            cell,
            left,
            top,
            show_values: cell >= 28,
        }
    }
}

fn draw_heatmap<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    map: &Heatmap,
    lay: &HeatLayout,
    text: bool,
) -> DrawResult {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    area.fill(&WHITE).map_err(err)?;
    let (nr, nc) = (map.row_labels.len(), map.col_labels.len());
    let cell = lay.cell as i32;
    let (x0, y0) = (lay.left as i32, lay.top as i32);
    for r in 0..nr {
        let row = &map.values[r * nc..(r + 1) * nc];
        let sum: f64 = row.iter().filter(|v| v.is_finite()).map(|v| v.abs()).sum();
        for (c, &v) in row.iter().enumerate() {
            let frac = if sum > 0.0 && v.is_finite() {
                (v.abs() / sum).min(1.0)
            } else {
                0.0
            };
            // white -> dark blue
            let shade = |lo: f64, hi: f64| (lo + (hi - lo) * frac).round() as u8;
            let color = RGBColor(shade(255.0, 8.0), shade(255.0, 48.0), shade(255.0, 107.0));
            let (cx, cy) = (x0 + c as i32 * cell, y0 + r as i32 * cell);
            area.draw(&Rectangle::new(
                [(cx, cy), (cx + cell, cy + cell)],
                color.filled(),
            ))
            .map_err(err)?;
            if text && lay.show_values {
                let ink = if frac > 0.5 { WHITE } else { BLACK };
                let label = trim(v);
                let style = TextStyle::from((FAMILY, 12).into_font()).color(&ink).pos(
                    text_anchor::Pos::new(text_anchor::HPos::Center, text_anchor::VPos::Center),
                );
                area.draw(&Text::new(label, (cx + cell / 2, cy + cell / 2), style))
                    .map_err(err)?;
            }
        }
    }
    // grid border
    area.draw(&Rectangle::new(
        [(x0, y0), (x0 + nc as i32 * cell, y0 + nr as i32 * cell)],
        BLACK.mix(0.4).stroke_width(1),
    ))
    .map_err(err)?;
    if !text {
        return Ok(());
    }
    use text_anchor::{HPos, Pos, VPos};
    let font = |size: u32| TextStyle::from((FAMILY, size).into_font());
    area.draw(&Text::new(
        map.title.clone(),
        (x0, 10),
        font(18).pos(Pos::new(HPos::Left, VPos::Top)),
    ))
    .map_err(err)?;
    let lsize = if cell >= 16 { 12 } else { 9 };
    for (r, l) in map.row_labels.iter().enumerate() {
        let y = y0 + r as i32 * cell + cell / 2;
        area.draw(&Text::new(
            l.clone(),
            (x0 - 4, y),
            font(lsize).pos(Pos::new(HPos::Right, VPos::Center)),
        ))
        .map_err(err)?;
    }
    for (c, l) in map.col_labels.iter().enumerate() {
        let x = x0 + c as i32 * cell + cell / 2;
        area.draw(&Text::new(
            l.clone(),
            (x, y0 - 4),
            font(lsize).pos(Pos::new(HPos::Center, VPos::Bottom)),
        ))
        .map_err(err)?;
    }
    // axis names: columns above the column labels, rows at the left
    area.draw(&Text::new(
        format!("{} \u{2192}", map.col_axis),
        (x0, y0 - 24),
        font(13).pos(Pos::new(HPos::Left, VPos::Bottom)),
    ))
    .map_err(err)?;
    area.draw(&Text::new(
        format!("{} \u{2193}", map.row_axis),
        (4, y0 - 24),
        font(13).pos(Pos::new(HPos::Left, VPos::Bottom)),
    ))
    .map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("recur-plot-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d.join(name)
    }

    fn sample_chart() -> Chart {
        let mut c = Chart::new("loss", "step", "mse").with_log_y(true);
        c.push(Series::line(
            "lstm",
            (0..50)
                .map(|i| (i as f64, (-0.1 * i as f64).exp()))
                .collect(),
        ));
        c.push(Series::dots(
            "rnn",
            (0..50).map(|i| (i as f64, 0.5 + 0.0 * i as f64)).collect(),
        ));
        c
    }

    #[test]
    fn writes_png_and_svg_with_and_without_text() {
        for text in [true, false] {
            let stem = tmp(&format!("chart-{text}"));
            let [png, svg] = outputs(&stem);
            let c = sample_chart();
            // without a font the drawing must still succeed: same code path, text switched off
            let draw =
                |a: &DrawingArea<SVGBackend, Shift>| draw_chart(a, &c, text && font_available());
            let mut s = String::new();
            {
                let area = SVGBackend::with_string(&mut s, CHART_SIZE).into_drawing_area();
                draw(&area).unwrap();
                area.present().unwrap();
            }
            assert!(
                s.contains("<svg") && s.contains("polyline"),
                "svg has no line"
            );
            if text && font_available() {
                assert!(s.contains("lstm"), "legend missing from svg");
            }
            if text {
                write_chart(&c, &stem).unwrap();
                let bytes = std::fs::read(&png).unwrap();
                assert_eq!(&bytes[1..4], b"PNG");
                assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
            }
        }
    }

    #[test]
    fn heatmap_and_bad_paths() {
        let map = Heatmap {
            title: "confusion".into(),
            row_axis: "true".into(),
            col_axis: "predicted".into(),
            row_labels: vec!["a".into(), "b".into(), "c".into()],
            col_labels: vec!["a".into(), "b".into(), "c".into()],
            values: vec![5.0, 1.0, 0.0, 0.0, 7.0, 2.0, 1.0, 0.0, 9.0],
        };
        let [png, _] = write_heatmap(&map, &tmp("heat")).unwrap();
        assert!(std::fs::metadata(png).unwrap().len() > 100);
        let bad = Heatmap {
            values: vec![1.0],
            ..map.clone()
        };
        assert!(write_heatmap(&bad, &tmp("bad")).is_err());
        let e = write_chart(&sample_chart(), Path::new("/nonexistent-dir/x/chart"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent-dir/x/chart.png"), "{e}");
    }

    #[test]
    fn equal_aspect_and_degenerate_data() {
        let mut c = Chart::new("path", "x", "y").with_equal_aspect(true);
        c.push(Series::line("flat", vec![(0.0, 1.0), (10.0, 1.0)]));
        c.push(Series::line("empty", vec![]));
        c.push(Series::dots("nan", vec![(f64::NAN, 1.0)]));
        write_chart(&c, &tmp("aspect")).unwrap();
        assert_eq!(trim(0.5), "0.5");
        assert_eq!(trim(100.0), "100");
    }
}
