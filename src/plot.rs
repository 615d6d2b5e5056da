//! Line plots as hand-written SVG: loss curves (training loss every step, validation loss at
//! its points) and routing analyses, on shared axes, with ticks. The file is plain text a
//! browser opens.

use std::fmt::Write;

/// One curve: a label, a colour, and (step, loss) points.
pub struct Curve<'a> {
    pub label: &'a str,
    pub color: &'a str,
    pub points: &'a [(f64, f64)],
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 420.0;
/// Margins: left, right, top, bottom.
const MARGIN: (f64, f64, f64, f64) = (64.0, 20.0, 36.0, 48.0);

/// An SVG drawing loss `curves` against the step, titled `title`.
pub fn loss_svg(title: &str, curves: &[Curve<'_>]) -> String {
    line_svg(title, "step", "loss (nats/token)", curves)
}

/// An SVG drawing `curves` (x ≥ 0) with axes labelled `x_label` and `y_label`, titled
/// `title`. Non-finite points are skipped.
pub fn line_svg(title: &str, x_label: &str, y_label: &str, curves: &[Curve<'_>]) -> String {
    let finite =
        || curves.iter().flat_map(|c| c.points.iter()).filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x_max, mut y_min, mut y_max) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in finite() {
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    if !y_min.is_finite() {
        (y_min, y_max) = (0.0, 1.0);
    }
    let y_step = nice_step((y_max - y_min).max(1e-6) / 5.0);
    let (y_lo, y_hi) = ((y_min / y_step).floor() * y_step, (y_max / y_step).ceil() * y_step);
    let x_step = nice_step(x_max / 6.0);
    let (left, right, top, bottom) = MARGIN;
    let (plot_w, plot_h) = (WIDTH - left - right, HEIGHT - top - bottom);
    let px = |x: f64| left + x / x_max * plot_w;
    let py = |y: f64| top + (y_hi - y) / (y_hi - y_lo).max(1e-12) * plot_h;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    // Grid and tick labels.
    let (x_right, y_bottom) = (WIDTH - right, HEIGHT - bottom);
    let mut y = y_lo;
    while y <= y_hi + y_step * 1e-6 {
        let (at, label, label_x) = (py(y), trim(y), left - 6.0);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{x_right}" y1="{at:.1}" y2="{at:.1}" stroke="#ddd"/><text x="{label_x}" y="{:.1}" text-anchor="end">{label}</text>"##,
            at + 4.0
        );
        y += y_step;
    }
    let mut x = 0.0;
    while x <= x_max + x_step * 1e-6 {
        let (at, label) = (px(x), trim(x));
        let _ = writeln!(
            s,
            r##"<line x1="{at:.1}" x2="{at:.1}" y1="{top}" y2="{y_bottom}" stroke="#eee"/><text x="{at:.1}" y="{}" text-anchor="middle">{label}</text>"##,
            y_bottom + 16.0
        );
        x += x_step;
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{x_label}</text><text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {2})">{y_label}</text>"#,
        left + plot_w / 2.0,
        HEIGHT - 8.0,
        top + plot_h / 2.0
    );
    let _ = writeln!(
        s,
        r#"<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>"#
    );
    // Curves, then the legend.
    for (i, c) in curves.iter().enumerate() {
        let points: Vec<String> = c
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#,
            c.color,
            points.join(" ")
        );
        let ly = top + 16.0 + 18.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{0}" x2="{1}" y1="{ly}" y2="{ly}" stroke="{2}" stroke-width="3"/><text x="{3}" y="{4}">{5}</text>"#,
            WIDTH - right - 150.0,
            WIDTH - right - 126.0,
            c.color,
            WIDTH - right - 120.0,
            ly + 4.0,
            escape(c.label)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let power = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * power).find(|&step| step >= raw).unwrap_or(10.0 * power)
}

/// A tick label without trailing zeros: 3.5, 200, 0.25.
fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
