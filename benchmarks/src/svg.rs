//! A small SVG chart writer for the report: line charts (linear or log axes) and grouped bar
//! charts. Self-contained text output, no plotting dependency.

use std::fmt::Write;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

/// One named line of a [`LineChart`].
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Points `(x, y)`; drawn in x order. Non-finite points, and non-positive ones on a log
    /// axis, are skipped.
    pub points: Vec<(f64, f64)>,
    /// Dashed line (e.g. for a reference such as a ceiling or an ideal).
    pub dashed: bool,
}

/// A line chart.
#[derive(Debug, Clone, Default)]
pub struct LineChart {
    /// Title above the plot.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Logarithmic x axis (base 10).
    pub x_log: bool,
    /// Logarithmic y axis (base 10).
    pub y_log: bool,
    /// The lines.
    pub series: Vec<Series>,
}

/// A grouped bar chart: one group per category, one bar per series in each group.
#[derive(Debug, Clone, Default)]
pub struct BarChart {
    /// Title above the plot.
    pub title: String,
    /// X axis label (what the categories are).
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Category names along the x axis.
    pub groups: Vec<String>,
    /// `(legend, one value per group)`; a missing or non-finite value leaves a gap.
    pub series: Vec<(String, Vec<f64>)>,
    /// Logarithmic y axis (base 10).
    pub y_log: bool,
}

/// Maps data values to pixels along one axis.
#[derive(Debug, Clone, Copy)]
struct Axis {
    min: f64,
    max: f64,
    log: bool,
}

impl Axis {
    /// An axis covering `values` (padded to nice bounds); `None` without usable values.
    fn fit(values: impl Iterator<Item = f64>, log: bool, from_zero: bool) -> Option<Self> {
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values.filter(|v| v.is_finite() && (!log || *v > 0.0)) {
            min = min.min(v);
            max = max.max(v);
        }
        if !min.is_finite() {
            return None;
        }
        if log {
            let (lo, hi) = (min.log10().floor(), max.log10().ceil());
            let hi = if hi <= lo { lo + 1.0 } else { hi };
            return Some(Self {
                min: 10f64.powf(lo),
                max: 10f64.powf(hi),
                log,
            });
        }
        if from_zero {
            min = min.min(0.0);
        }
        if max <= min {
            max = min + 1.0;
        }
        let step = nice_step((max - min) / 5.0);
        Some(Self {
            min: (min / step).floor() * step,
            max: (max / step).ceil() * step,
            log,
        })
    }

    /// Position of `v` in `[0, 1]`.
    fn unit(&self, v: f64) -> f64 {
        if self.log {
            (v.log10() - self.min.log10()) / (self.max.log10() - self.min.log10())
        } else {
            (v - self.min) / (self.max - self.min)
        }
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let (lo, hi) = (
                self.min.log10().round() as i32,
                self.max.log10().round() as i32,
            );
            return (lo..=hi).map(|e| 10f64.powi(e)).collect();
        }
        let step = nice_step((self.max - self.min) / 5.0);
        let n = ((self.max - self.min) / step).round() as usize;
        (0..=n.min(20))
            .map(|i| self.min + i as f64 * step)
            .collect()
    }

    fn usable(&self, v: f64) -> bool {
        v.is_finite() && (!self.log || v > 0.0)
    }
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let fraction = raw / magnitude;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// A tick label: compact, without trailing zeros.
pub fn format_number(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1e9 {
        format!("{}G", trim(v / 1e9))
    } else if a >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if a >= 1e4 {
        format!("{}k", trim(v / 1e3))
    } else if a >= 0.01 {
        trim(v)
    } else if a >= 1e-9 {
        // Two significant digits: 0.005 is "0.005", not "0".
        let decimals = (-a.log10()).ceil() as usize + 1;
        let s = format!("{v:.decimals$}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        format!("{v:.1e}")
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_owned()
}

/// Escapes text for SVG.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn plot_w() -> f64 {
    WIDTH - LEFT - RIGHT
}

fn plot_h() -> f64 {
    HEIGHT - TOP - BOTTOM
}

fn header(out: &mut String, title: &str, x_label: &str, y_label: &str) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{}</text>
<text x="{}" y="{}" text-anchor="middle">{}</text>
<text transform="translate(18,{}) rotate(-90)" text-anchor="middle">{}</text>
"#,
        LEFT + plot_w() / 2.0,
        escape(title),
        LEFT + plot_w() / 2.0,
        HEIGHT - 15.0,
        escape(x_label),
        TOP + plot_h() / 2.0,
        escape(y_label),
    );
}

fn y_grid(out: &mut String, y: &Axis) {
    for tick in y.ticks() {
        let py = TOP + plot_h() * (1.0 - y.unit(tick));
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w(),
            LEFT - 6.0,
            py + 4.0,
            format_number(tick)
        );
    }
}

fn frame_and_legend(out: &mut String, names: &[(String, bool)]) {
    let _ = writeln!(
        out,
        r#"<rect x="{LEFT}" y="{TOP}" width="{:.1}" height="{:.1}" fill="none" stroke="black"/>"#,
        plot_w(),
        plot_h()
    );
    for (i, (name, dashed)) in names.iter().enumerate() {
        let y = TOP + 10.0 + i as f64 * 20.0;
        let x = LEFT + plot_w() + 12.0;
        let dash = if *dashed {
            r#" stroke-dasharray="6,4""#
        } else {
            ""
        };
        let _ = writeln!(
            out,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{}" stroke-width="3"{dash}/><text x="{}" y="{}">{}</text>"#,
            x + 24.0,
            COLORS[i % COLORS.len()],
            x + 30.0,
            y + 4.0,
            escape(name)
        );
    }
}

impl LineChart {
    /// The chart as an SVG document.
    pub fn render(&self) -> String {
        let mut out = String::new();
        header(&mut out, &self.title, &self.x_label, &self.y_label);
        let points = || self.series.iter().flat_map(|s| s.points.iter().copied());
        let (Some(x), Some(y)) = (
            Axis::fit(points().map(|p| p.0), self.x_log, false),
            Axis::fit(points().map(|p| p.1), self.y_log, true),
        ) else {
            let _ = writeln!(
                out,
                r#"<text x="{}" y="{}" text-anchor="middle">no data</text></svg>"#,
                WIDTH / 2.0,
                HEIGHT / 2.0
            );
            return out;
        };
        y_grid(&mut out, &y);
        for tick in x.ticks() {
            let px = LEFT + plot_w() * x.unit(tick);
            let _ = writeln!(
                out,
                r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#eee"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                TOP + plot_h(),
                TOP + plot_h() + 18.0,
                format_number(tick)
            );
        }
        for (i, series) in self.series.iter().enumerate() {
            let mut pts: Vec<_> = series
                .points
                .iter()
                .copied()
                .filter(|(px, py)| x.usable(*px) && y.usable(*py))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            let coords: Vec<String> = pts
                .iter()
                .map(|(px, py)| {
                    format!(
                        "{:.1},{:.1}",
                        LEFT + plot_w() * x.unit(*px),
                        TOP + plot_h() * (1.0 - y.unit(*py))
                    )
                })
                .collect();
            let color = COLORS[i % COLORS.len()];
            let dash = if series.dashed {
                r#" stroke-dasharray="6,4""#
            } else {
                ""
            };
            let _ = writeln!(
                out,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{}"/>"#,
                coords.join(" ")
            );
            for c in &coords {
                let (cx, cy) = c.split_once(',').unwrap_or(("0", "0"));
                let _ = writeln!(out, r#"<circle cx="{cx}" cy="{cy}" r="3" fill="{color}"/>"#);
            }
        }
        let names: Vec<_> = self
            .series
            .iter()
            .map(|s| (s.name.clone(), s.dashed))
            .collect();
        frame_and_legend(&mut out, &names);
        out.push_str("</svg>\n");
        out
    }
}

impl BarChart {
    /// The chart as an SVG document.
    pub fn render(&self) -> String {
        let mut out = String::new();
        header(&mut out, &self.title, &self.x_label, &self.y_label);
        let values = self.series.iter().flat_map(|(_, v)| v.iter().copied());
        let Some(y) = Axis::fit(values, self.y_log, true) else {
            let _ = writeln!(
                out,
                r#"<text x="{}" y="{}" text-anchor="middle">no data</text></svg>"#,
                WIDTH / 2.0,
                HEIGHT / 2.0
            );
            return out;
        };
        y_grid(&mut out, &y);
        let groups = self.groups.len().max(1) as f64;
        let group_w = plot_w() / groups;
        let bar_w = group_w * 0.8 / self.series.len().max(1) as f64;
        let base = if y.log { y.min } else { 0.0_f64.max(y.min) };
        for (g, name) in self.groups.iter().enumerate() {
            let gx = LEFT + g as f64 * group_w;
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                gx + group_w / 2.0,
                TOP + plot_h() + 18.0,
                escape(name)
            );
            for (s, (_, values)) in self.series.iter().enumerate() {
                let Some(&v) = values.get(g) else { continue };
                if !y.usable(v) {
                    continue;
                }
                let top = TOP + plot_h() * (1.0 - y.unit(v));
                let bottom = TOP + plot_h() * (1.0 - y.unit(base));
                let _ = writeln!(
                    out,
                    r#"<rect x="{:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}</title></rect>"#,
                    gx + group_w * 0.1 + s as f64 * bar_w,
                    bar_w.max(1.0) - 1.0,
                    (bottom - top).max(0.0),
                    COLORS[s % COLORS.len()],
                    format_number(v)
                );
            }
        }
        let names: Vec<_> = self
            .series
            .iter()
            .map(|(n, _)| (n.clone(), false))
            .collect();
        frame_and_legend(&mut out, &names);
        out.push_str("</svg>\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps_are_1_2_5() {
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(1.5), 2.0);
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(7.0), 10.0);
        assert_eq!(nice_step(230.0), 500.0);
        assert_eq!(nice_step(-1.0), 1.0);
    }

    #[test]
    fn numbers_are_compact() {
        assert_eq!(format_number(0.0), "0");
        assert_eq!(format_number(2.5), "2.5");
        assert_eq!(format_number(1000.0), "1000");
        assert_eq!(format_number(20_000.0), "20k");
        assert_eq!(format_number(6_001_215.0), "6M");
        assert_eq!(format_number(1.5e9), "1.5G");
        assert_eq!(format_number(0.005), "0.005");
        assert_eq!(format_number(0.001), "0.001");
        assert_eq!(format_number(0.0025), "0.0025");
        assert_eq!(format_number(-0.004), "-0.004");
        assert_eq!(format_number(0.05), "0.05");
        assert_eq!(format_number(1e-12), "1.0e-12");
    }

    #[test]
    fn log_axis_spans_whole_decades() {
        let axis = Axis::fit([3.0, 4000.0, -1.0, f64::NAN].into_iter(), true, false)
            .expect("usable values");
        assert_eq!((axis.min, axis.max), (1.0, 10_000.0));
        assert_eq!(axis.ticks(), vec![1.0, 10.0, 100.0, 1000.0, 10_000.0]);
        assert!((axis.unit(100.0) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn line_chart_draws_every_series_and_escapes_text() {
        let chart = LineChart {
            title: "a < b & c".into(),
            x_label: "rows".into(),
            y_label: "MB/s".into(),
            x_log: true,
            y_log: false,
            series: vec![
                Series {
                    name: "client".into(),
                    points: vec![(1e3, 10.0), (1e6, 900.0), (1e5, 300.0)],
                    dashed: false,
                },
                Series {
                    name: "ceiling".into(),
                    points: vec![(1e3, 20.0), (1e6, 1200.0)],
                    dashed: true,
                },
            ],
        };
        let svg = chart.render();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("a &lt; b &amp; c"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 5);
        assert!(svg.contains("stroke-dasharray"));
        // Points are drawn in x order: 1e3, 1e5, 1e6 map to increasing pixels.
        let line = svg
            .lines()
            .find(|l| l.starts_with("<polyline"))
            .expect("a polyline");
        let xs: Vec<f64> = line
            .split("points=\"")
            .nth(1)
            .expect("points")
            .trim_end_matches("\"/>")
            .split(' ')
            .map(|p| p.split(',').next().expect("x").parse().expect("number"))
            .collect();
        assert!(xs.windows(2).all(|w| w[0] < w[1]), "{xs:?}");
    }

    #[test]
    fn empty_charts_say_so() {
        assert!(LineChart::default().render().contains("no data"));
        assert!(BarChart::default().render().contains("no data"));
    }

    #[test]
    fn bar_chart_draws_one_bar_per_value() {
        let chart = BarChart {
            title: "bytes".into(),
            x_label: "TPC-H query".into(),
            y_label: "MB".into(),
            groups: vec!["Q3".into(), "Q5".into()],
            series: vec![
                ("full".into(), vec![1.0, 2.0]),
                ("none".into(), vec![10.0, f64::NAN]),
            ],
            y_log: false,
        };
        let svg = chart.render();
        assert_eq!(svg.matches("<rect x=").count(), 3 + 1, "{svg}");
        assert!(svg.contains(">TPC-H query</text>"), "{svg}");
    }
}
