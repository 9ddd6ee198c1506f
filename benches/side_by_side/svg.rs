//! Line charts as hand-written SVG (no plotting crate): axes with ticks, one polyline with
//! markers per series, a legend.

use std::fmt::Write;

/// One line of a chart.
pub(crate) struct Series {
    /// Legend text.
    pub(crate) label: String,
    /// Stroke colour.
    pub(crate) color: &'static str,
    /// Dashed stroke (used for the ceiling).
    pub(crate) dashed: bool,
    /// (x, y) in data units.
    pub(crate) points: Vec<(f64, f64)>,
}

/// A chart.
pub(crate) struct Chart {
    /// Title above the plot.
    pub(crate) title: String,
    /// X axis label.
    pub(crate) x_label: String,
    /// Y axis label.
    pub(crate) y_label: String,
    /// X ticks: position in data units and label. With `categorical`, points are placed at
    /// their x value and the ticks name them.
    pub(crate) x_ticks: Vec<(f64, String)>,
    /// Logarithmic y axis.
    pub(crate) log_y: bool,
    /// Logarithmic x axis.
    pub(crate) log_x: bool,
    /// The lines.
    pub(crate) series: Vec<Series>,
}

const W: f64 = 720.0;
const H: f64 = 420.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

impl Chart {
    /// The SVG document.
    pub(crate) fn render(&self) -> String {
        let xs: Vec<f64> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .chain(self.x_ticks.iter().map(|t| t.0))
            .collect();
        let ys: Vec<f64> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .filter(|y| y.is_finite())
            .collect();
        let tx = |x: f64| if self.log_x { x.max(1e-9).log10() } else { x };
        let (x0, x1) = bounds(xs.iter().map(|&x| tx(x)));
        let (x0, x1) = if x1 > x0 {
            (x0, x1)
        } else {
            (x0 - 1.0, x0 + 1.0)
        };
        let y_ticks = if self.log_y {
            log_ticks(&ys)
        } else {
            linear_ticks(ys.iter().copied().fold(0.0, f64::max))
        };
        let ty = |y: f64| if self.log_y { y.max(1e-9).log10() } else { y };
        let y0 = ty(y_ticks.first().copied().unwrap_or(0.0));
        let y1 = ty(y_ticks.last().copied().unwrap_or(1.0));
        let (y0, y1) = if y1 > y0 { (y0, y1) } else { (y0, y0 + 1.0) };
        let pw = W - LEFT - RIGHT;
        let ph = H - TOP - BOTTOM;
        // A margin of 4 % on each side of the x range keeps markers off the axes.
        let pad = (x1 - x0) * 0.04;
        let px = |x: f64| LEFT + (tx(x) - x0 + pad) / (x1 - x0 + 2.0 * pad) * pw;
        let py = |y: f64| TOP + ph - (ty(y) - y0) / (y1 - y0) * ph;

        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
            LEFT + pw / 2.0,
            esc(&self.title)
        );
        for &t in &y_ticks {
            let y = py(t);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e0e0e0"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + pw,
                LEFT - 6.0,
                y + 4.0,
                esc(&si(t))
            );
        }
        for (t, label) in &self.x_ticks {
            let x = px(*t);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#888"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                TOP + ph,
                TOP + ph + 5.0,
                TOP + ph + 20.0,
                esc(label)
            );
        }
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            LEFT + pw / 2.0,
            H - 15.0,
            esc(&self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text transform="translate(18,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            TOP + ph / 2.0,
            esc(&self.y_label)
        );
        for (i, series) in self.series.iter().enumerate() {
            let pts: Vec<String> = series
                .points
                .iter()
                .filter(|p| p.1.is_finite())
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            let dash = if series.dashed {
                r#" stroke-dasharray="6,4""#
            } else {
                ""
            };
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#,
                pts.join(" "),
                series.color
            );
            for p in &pts {
                let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
                let _ = writeln!(
                    s,
                    r#"<circle cx="{x}" cy="{y}" r="3.5" fill="{}"/>"#,
                    series.color
                );
            }
            let ly = TOP + 14.0 + 20.0 * i as f64;
            let lx = LEFT + pw + 14.0;
            let _ = writeln!(
                s,
                r#"<line x1="{lx}" y1="{ly}" x2="{:.1}" y2="{ly}" stroke="{}" stroke-width="2"{dash}/><text x="{:.1}" y="{:.1}">{}</text>"#,
                lx + 24.0,
                series.color,
                lx + 30.0,
                ly + 4.0,
                esc(&series.label)
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

fn bounds(v: impl Iterator<Item = f64>) -> (f64, f64) {
    v.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    })
}

/// 0 and about five round steps up to at least `max`.
fn linear_ticks(max: f64) -> Vec<f64> {
    let max = if max > 0.0 { max } else { 1.0 };
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let n = (max / step).ceil() as usize;
    (0..=n).map(|i| i as f64 * step).collect()
}

/// Powers of ten spanning the data (1-2-5 steps inside a narrow span).
fn log_ticks(ys: &[f64]) -> Vec<f64> {
    let (lo, hi) = bounds(ys.iter().copied().filter(|y| *y > 0.0));
    if !lo.is_finite() {
        return vec![1.0, 10.0];
    }
    let a = lo.log10().floor() as i32;
    let b = hi.log10().ceil().max(f64::from(a + 1)) as i32;
    let mut out = Vec::new();
    for e in a..=b {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(e);
            if (b - a <= 2 || m == 1.0) && v <= 10f64.powi(b) {
                out.push(v);
            }
        }
    }
    out
}

/// 12000 → "12k", 1500000 → "1.5M".
pub(crate) fn si(v: f64) -> String {
    let (d, suffix) = if v.abs() >= 1e6 {
        (1e6, "M")
    } else if v.abs() >= 1e3 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    let x = v / d;
    if (x - x.round()).abs() < 1e-9 {
        format!("{x:.0}{suffix}")
    } else {
        format!("{x:.1}{suffix}")
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
