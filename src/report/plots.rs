//! Figures as SVG (plotters) and PNG (the same SVG rasterised by resvg).
//!
//! PNGs are drawn from the SVG rather than by plotters' bitmap backend because that backend
//! needs system font libraries (font-kit) to draw text; resvg is pure Rust and reads the
//! embedded DejaVu Sans, so the PNGs build offline, on any machine, with the same glyphs
//! everywhere (determinism: same report, same bytes).

use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;

use super::analysis::CATEGORIES;
use super::sections::bench_title;
use super::{Report, ReportError};

/// DejaVu Sans (Bitstream Vera licence, see `assets/fonts/DejaVuSans-LICENSE.txt`).
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

const SIZE: (u32, u32) = (720, 440);

/// One figure: `name` is its file stem (`plots/<name>.svg`).
#[derive(Clone, Debug)]
pub struct Plot {
    pub name: String,
    pub title: String,
    pub svg: String,
}

/// A file-name-safe version of a label.
pub fn slug(s: &str) -> String {
    s.chars()
        .map(
            |c| match c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                true => c,
                false => '-',
            },
        )
        .collect()
}

/// Every figure the report has data for, in a fixed order.
pub fn plots(report: &Report) -> Result<Vec<Plot>, ReportError> {
    let mut out = Vec::new();
    let baseline = report.baseline.as_str();
    // Figure 2: one plot per model and sampled benchmark.
    let mut keys: Vec<(&str, &str)> = Vec::new();
    for c in &report.pass_at {
        if !keys.contains(&(c.model.as_str(), c.benchmark.as_str())) {
            keys.push((&c.model, &c.benchmark));
        }
    }
    for (model, bench) in keys {
        let series: Vec<(String, Vec<(f64, f64)>)> = report
            .pass_at
            .iter()
            .filter(|c| c.model == model && c.benchmark == bench)
            .map(|c| {
                let pts = c
                    .values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| ((i + 1) as f64, *v))
                    .collect();
                (c.method.clone(), pts)
            })
            .collect();
        let title = format!("Pass@N on {}: {model}", bench_title(bench));
        let name = slug(&format!("pass_at-{model}-{bench}"));
        let svg = line_chart(
            &name,
            &title,
            ("N (samples)", "Pass@N (%)"),
            &series,
            true,
            &|l| l == baseline || l.ends_with(&format!(": {baseline}")),
        )?;
        out.push(Plot { name, title, svg });
    }
    // Training curves: one plot per model.
    for model in report.blocks.iter().map(|b| &b.model) {
        let series: Vec<(String, Vec<(f64, f64)>)> = report
            .training
            .iter()
            .filter(|t| &t.model == model && !t.curve.is_empty())
            .map(|t| (format!("{} ({})", t.method, t.cell), t.curve.clone()))
            .collect();
        if series.is_empty() {
            continue;
        }
        let title = format!("Training loss: {model}");
        let name = slug(&format!("training-{model}"));
        let svg = line_chart(&name, &title, ("step", "loss"), &series, false, &|l| {
            l.starts_with(&format!("{baseline} (")) || l.contains(&format!(": {baseline} ("))
        })?;
        out.push(Plot { name, title, svg });
    }
    // Figure 3: per model, entropy and mean reward against step, and accuracy on each
    // evaluated benchmark; one line per starting point.
    let mut models: Vec<&str> = Vec::new();
    for run in &report.rl {
        if !models.contains(&run.model.as_str()) {
            models.push(&run.model);
        }
    }
    for model in models {
        let runs: Vec<&super::RlRun> = report.rl.iter().filter(|r| r.model == model).collect();
        let is_base = |l: &str| l == baseline || l.ends_with(&format!(": {baseline}"));
        for (what, axis, pick) in [
            (
                "entropy",
                "entropy (nats)",
                (|r: &super::RlRun| r.entropy.clone()) as fn(&super::RlRun) -> Vec<(f64, f64)>,
            ),
            ("reward", "mean reward", |r: &super::RlRun| r.reward.clone()),
        ] {
            let series: Vec<(String, Vec<(f64, f64)>)> = runs
                .iter()
                .map(|r| (r.label.clone(), pick(r)))
                .filter(|(_, pts)| !pts.is_empty())
                .collect();
            if series.is_empty() {
                continue;
            }
            let title = format!("GRPO {what}: {model}");
            let name = slug(&format!("rl-{what}-{model}"));
            let svg = line_chart(
                &name,
                &title,
                ("RL step", axis),
                &series,
                what == "reward",
                &is_base,
            )?;
            out.push(Plot { name, title, svg });
        }
        let mut benches: Vec<&String> = Vec::new();
        for r in &runs {
            for b in &r.benchmarks {
                if !benches.contains(&b) {
                    benches.push(b);
                }
            }
        }
        for bench in benches {
            let series: Vec<(String, Vec<(f64, f64)>)> = runs
                .iter()
                .filter_map(|r| {
                    let i = r.benchmarks.iter().position(|b| b == bench)?;
                    Some((r.label.clone(), r.accuracy.get(i)?.clone()))
                })
                .collect();
            let title = format!("GRPO accuracy on {}: {model}", bench_title(bench));
            let name = slug(&format!("rl-accuracy-{model}-{bench}"));
            let svg = line_chart(
                &name,
                &title,
                ("RL step", "accuracy (%)"),
                &series,
                true,
                &is_base,
            )?;
            out.push(Plot { name, title, svg });
        }
    }
    // Figure 6: one plot, a group of bars per model, a bar per method (its average accuracy).
    if !report.number_only.is_empty() {
        let models: Vec<&str> = report
            .number_only
            .iter()
            .map(|n| n.model.as_str())
            .collect();
        let mut labels: Vec<&str> = Vec::new();
        for b in report.number_only.iter().flat_map(|n| &n.bars) {
            if !labels.contains(&b.label.as_str()) {
                labels.push(&b.label);
            }
        }
        let sets: Vec<(String, Vec<Option<f64>>)> = labels
            .iter()
            .map(|l| {
                let values = report
                    .number_only
                    .iter()
                    .map(|n| {
                        n.bars
                            .iter()
                            .find(|b| b.label == *l)
                            .and_then(|b| b.average)
                    })
                    .collect();
                (l.to_string(), values)
            })
            .collect();
        let name = "number-only".to_string();
        let title = "Number-only fine-tuning: average accuracy".to_string();
        let svg = bar_chart(&name, &title, "average accuracy (%)", &models, &sets)?;
        out.push(Plot { name, title, svg });
    }
    // Figure 4: one plot, a group of bars per model and set of training responses (those a
    // method trains this model on), a bar per method kind (its average accuracy).
    if !report.responses.is_empty() {
        let mut groups: Vec<String> = Vec::new();
        // (table, column) of each group
        let mut at: Vec<(&super::ResponsesTable, usize)> = Vec::new();
        for t in &report.responses {
            for (j, column) in t.columns.iter().enumerate() {
                if t.rows
                    .iter()
                    .all(|r| r.cells.get(j).is_none_or(Option::is_none))
                {
                    continue;
                }
                groups.push(format!("{}\n{column}", t.model));
                at.push((t, j));
            }
        }
        let mut labels: Vec<&str> = Vec::new();
        for row in report.responses.iter().flat_map(|t| &t.rows) {
            if !labels.contains(&row.label.as_str()) {
                labels.push(&row.label);
            }
        }
        let sets: Vec<(String, Vec<Option<f64>>)> = labels
            .iter()
            .map(|l| {
                let values = at
                    .iter()
                    .map(|(t, j)| {
                        t.rows
                            .iter()
                            .find(|r| r.label == *l)
                            .and_then(|r| r.cells.get(*j)?.as_ref()?.average)
                    })
                    .collect();
                (l.to_string(), values)
            })
            .collect();
        let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
        let name = "responses".to_string();
        let title = "Training responses: average accuracy".to_string();
        // Room for each group's two-line name under it.
        let width = SIZE.0.max(140 * groups.len() as u32 + 120);
        let svg = bar_chart_sized(
            &name,
            &title,
            "average accuracy (%)",
            &groups,
            &sets,
            (width, SIZE.1),
        )?;
        out.push(Plot { name, title, svg });
    }
    // Figure 5: one plot per model and CFT rule.
    for c in &report.categories {
        let title = format!("Token categories: {} {}", c.model, c.method);
        let name = slug(&format!("categories-{}-{}", c.model, c.method));
        let svg = category_chart(&name, &title, &c.critical, &c.normal)?;
        out.push(Plot { name, title, svg });
    }
    // Merged reports can name one figure twice; keep the first.
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|p| seen.insert(p.name.clone()));
    Ok(out)
}

fn plot_error(name: &str) -> impl Fn(String) -> ReportError + '_ {
    move |message| ReportError::Plot {
        name: name.to_string(),
        message,
    }
}

/// The palette: matplotlib's "tab10", so ten lines of a figure differ by colour alone.
const COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn colour(i: usize) -> RGBColor {
    COLOURS[i % COLOURS.len()]
}

/// How one line of a figure is drawn: its colour and, if not solid, its dash and gap
/// lengths in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LineStyle {
    pub colour: (u8, u8, u8),
    pub dash: Option<(u32, u32)>,
}

/// The style of line `i` of a figure. Lines differ by colour first; every further round of
/// the palette takes the next dash pattern, so no two lines of a figure look alike however
/// many it has (the quickstart's Pass@N figure has ten). The baseline is dashed, as SFT in
/// the paper's Figure 2, with 6-pixel dashes that no other line uses.
pub fn line_style(i: usize, baseline: bool) -> LineStyle {
    let round = i / COLOURS.len();
    let RGBColor(r, g, b) = colour(i);
    // The others' dashes are never 6 pixels long, so a baseline is never taken for one.
    let dash = match (baseline, round) {
        (true, k) => Some((6, 4 + k as u32)),
        (false, 0) => None,
        (false, 1) => Some((14, 5)),
        (false, 2) => Some((2, 4)),
        (false, 3) => Some((20, 4)),
        (false, k) => Some((2 + 3 * k as u32, 2 + k as u32)),
    };
    LineStyle {
        colour: (r, g, b),
        dash,
    }
}

/// Pixels of the legend's line sample; the legend's text starts 10 pixels after it.
const LEGEND_SAMPLE: i32 = 30;

/// Axis bounds with a little room around the data.
fn bounds(series: &[(String, Vec<(f64, f64)>)]) -> (f64, f64, f64, f64) {
    let pts = series.iter().flat_map(|s| s.1.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-9 {
        x1 = x0 + 1.0;
    }
    // A flat curve (every Pass@N at 0) still gets a readable axis around its value.
    let pad = match y1 - y0 > 1e-9 {
        true => (y1 - y0) * 0.08,
        false => (y1.abs() * 0.1).max(1.0),
    };
    // Accuracies and losses are never negative: the axis need not be either.
    let low = if y0 >= 0.0 {
        (y0 - pad).max(0.0)
    } else {
        y0 - pad
    };
    (x0, x1, low, y1 + pad)
}

fn line_chart(
    name: &str,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    series: &[(String, Vec<(f64, f64)>)],
    rising: bool,
    is_baseline: &dyn Fn(&str) -> bool,
) -> Result<String, ReportError> {
    let err = plot_error(name);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(format!("{e:?}")))?;
        let (x0, x1, y0, y1) = bounds(series);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| err(format!("{e:?}")))?;
        // Steps and sample counts are whole numbers: label only those.
        let whole = |x: &f64| match (x - x.round()).abs() < 1e-9 {
            true => format!("{}", x.round() as i64),
            false => String::new(),
        };
        let ticks = ((x1 - x0).round() as usize + 1).clamp(2, 11);
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_labels(ticks)
            .x_label_formatter(&whole)
            .light_line_style(RGBColor(240, 240, 240))
            .draw()
            .map_err(|e| err(format!("{e:?}")))?;
        for (i, (label, pts)) in series.iter().enumerate() {
            let LineStyle {
                colour: (r, g, b),
                dash,
            } = line_style(i, is_baseline(label));
            let c = RGBColor(r, g, b);
            let style = c.stroke_width(2);
            let drawn = match dash {
                Some((on, off)) => {
                    chart.draw_series(DashedLineSeries::new(pts.iter().copied(), on, off, style))
                }
                None => chart.draw_series(LineSeries::new(pts.iter().copied(), style)),
            };
            drawn
                .map_err(|e| err(format!("{e:?}")))?
                .label(label.as_str())
                // The legend's sample drawn as the line is, dashes and all; a solid line's is
                // one dash as long as the sample.
                .legend(move |(x, y)| {
                    let (on, off) = dash.unwrap_or((LEGEND_SAMPLE as u32, 1));
                    let sample = vec![(0, 0), (LEGEND_SAMPLE, 0)];
                    EmptyElement::at((x, y)) + DashedPathElement::new(sample, on, off, style)
                });
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
                .map_err(|e| err(format!("{e:?}")))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .legend_area_size(LEGEND_SAMPLE + 10)
            // A rising curve (Pass@N) leaves the lower right empty; a falling one (loss) the
            // upper right.
            .position(match rising {
                true => SeriesLabelPosition::LowerRight,
                false => SeriesLabelPosition::UpperRight,
            })
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(|e| err(format!("{e:?}")))?;
        root.present().map_err(|e| err(format!("{e:?}")))?;
    }
    Ok(svg)
}

/// Grouped bars: each category's share (%) of the critical and of the normal tokens.
fn category_chart(
    name: &str,
    title: &str,
    critical: &[(String, f64)],
    normal: &[(String, f64)],
) -> Result<String, ReportError> {
    let shares = |v: &[(String, f64)]| v.iter().map(|(_, s)| Some(s * 100.0)).collect();
    bar_chart(
        name,
        title,
        "share of tokens (%)",
        &CATEGORIES,
        &[
            ("critical".to_string(), shares(critical)),
            ("normal".to_string(), shares(normal)),
        ],
    )
}

/// Grouped bars on a 0-100 axis: for each of `groups` (along x, named under their bars), one
/// bar per set, `sets[k].1[i]` the value of set k in group i (absent: no bar).
fn bar_chart(
    name: &str,
    title: &str,
    y_desc: &str,
    groups: &[&str],
    sets: &[(String, Vec<Option<f64>>)],
) -> Result<String, ReportError> {
    bar_chart_sized(name, title, y_desc, groups, sets, SIZE)
}

/// [`bar_chart`] of a given size; a group's name may have two lines (`\n`).
fn bar_chart_sized(
    name: &str,
    title: &str,
    y_desc: &str,
    groups: &[&str],
    sets: &[(String, Vec<Option<f64>>)],
    size: (u32, u32),
) -> Result<String, ReportError> {
    let err = plot_error(name);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(format!("{e:?}")))?;
        let top = sets
            .iter()
            .flat_map(|(_, v)| v.iter().flatten())
            .fold(0.0f64, |a, b| a.max(*b));
        let y1 = ((top / 10.0).ceil() * 10.0).clamp(10.0, 100.0);
        let n = groups.len() as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..n, 0.0..y1)
            .map_err(|e| err(format!("{e:?}")))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc(y_desc)
            .light_line_style(RGBColor(240, 240, 240))
            .draw()
            .map_err(|e| err(format!("{e:?}")))?;
        // The bars of a group fill 0.8 of its width, each 95% of its share.
        let step = 0.8 / sets.len().max(1) as f64;
        for (k, (set, values)) in sets.iter().enumerate() {
            let c = colour(k);
            let offset = 0.1 + k as f64 * step;
            chart
                .draw_series(values.iter().enumerate().filter_map(|(i, v)| {
                    let x = i as f64 + offset;
                    v.map(|v| Rectangle::new([(x, 0.0), (x + step * 0.95, v)], c.filled()))
                }))
                .map_err(|e| err(format!("{e:?}")))?
                .label(set.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(|e| err(format!("{e:?}")))?;
        group_labels(&root, &chart, groups, &err)?;
        root.present().map_err(|e| err(format!("{e:?}")))?;
    }
    Ok(svg)
}

/// Group names centred under their bars, a line under another for each `\n`.
fn group_labels<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &ChartContext<
        '_,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    groups: &[&str],
    err: &dyn Fn(String) -> ReportError,
) -> Result<(), ReportError> {
    let style = TextStyle::from(("sans-serif", 14).into_font()).pos(
        plotters::style::text_anchor::Pos::new(
            plotters::style::text_anchor::HPos::Center,
            plotters::style::text_anchor::VPos::Top,
        ),
    );
    for (i, c) in groups.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
        for (k, line) in c.split('\n').enumerate() {
            let y = y + 8 + 16 * k as i32;
            root.draw(&Text::new(line.to_string(), (x, y), style.clone()))
                .map_err(|e| err(format!("{e:?}")))?;
        }
    }
    Ok(())
}

/// The PNG of an SVG figure.
pub fn to_png(plot: &Plot) -> Result<Vec<u8>, ReportError> {
    use resvg::{tiny_skia, usvg};
    let err = plot_error(&plot.name);
    let mut options = usvg::Options::default();
    {
        let db = options.fontdb_mut();
        db.load_font_data(FONT.to_vec());
        db.set_sans_serif_family("DejaVu Sans");
    }
    options.font_family = "DejaVu Sans".into();
    let tree = usvg::Tree::from_str(&plot.svg, &options).map_err(|e| err(e.to_string()))?;
    let size = tree.size().to_int_size();
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or_else(|| err("empty image".into()))?;
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    pixmap.encode_png().map_err(|e| err(e.to_string()))
}
