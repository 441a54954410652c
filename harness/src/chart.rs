//! Small self-contained SVG charts for the demo and jepsen-lite's report:
//! grouped bars ([`render`]) and lines over shaded windows
//! ([`render_lines`]). No JavaScript, no fonts beyond the viewer's
//! default, viewable in any browser.

use std::fmt::Write as _;

/// One group of bars (e.g. a consistency level) with a value per series.
pub struct Group {
    /// Label under the group.
    pub label: String,
    /// One value per series.
    pub values: Vec<f64>,
}

/// One panel: a title, the unit of its values, series names and groups.
pub struct Panel {
    /// Title above the panel.
    pub title: String,
    /// Unit shown after each value.
    pub unit: String,
    /// Names of the series, in the order of `Group::values`.
    pub series: Vec<String>,
    /// The groups.
    pub groups: Vec<Group>,
}

const COLORS: [&str; 4] = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759"];
const PANEL_W: f64 = 420.0;
const PANEL_H: f64 = 260.0;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Renders panels side by side as one SVG document.
pub fn render(title: &str, panels: &[Panel]) -> String {
    let width = PANEL_W * panels.len() as f64 + 40.0;
    let height = PANEL_H + 90.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="20" y="24" font-size="16" font-weight="bold">{}</text>"#,
        escape(title)
    );
    for (p, panel) in panels.iter().enumerate() {
        let x0 = 20.0 + p as f64 * PANEL_W;
        let (top, bottom) = (70.0, 50.0 + PANEL_H);
        let max = panel.groups.iter().flat_map(|g| &g.values).cloned().fold(0.0, f64::max).max(1e-9);
        let _ = write!(svg, r#"<text x="{x0}" y="50" font-weight="bold">{}</text>"#, escape(&panel.title));
        let _ = write!(svg, r#"<line x1="{x0}" y1="{bottom}" x2="{}" y2="{bottom}" stroke="black"/>"#, x0 + PANEL_W - 40.0);
        let group_w = (PANEL_W - 60.0) / panel.groups.len().max(1) as f64;
        let bar_w = group_w / (panel.series.len() as f64 + 1.0);
        for (g, group) in panel.groups.iter().enumerate() {
            let gx = x0 + 10.0 + g as f64 * group_w;
            for (s, v) in group.values.iter().enumerate() {
                let h = (bottom - top) * v / max;
                let bx = gx + s as f64 * bar_w;
                let _ = write!(
                    svg,
                    r#"<rect x="{bx:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{}"><title>{}: {v:.2} {}</title></rect><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{v:.1}</text>"#,
                    bottom - h,
                    bar_w - 2.0,
                    COLORS[s % COLORS.len()],
                    escape(&panel.series[s]),
                    escape(&panel.unit),
                    bx + bar_w / 2.0,
                    bottom - h - 3.0
                );
            }
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
                gx + group_w / 2.0 - bar_w / 2.0,
                bottom + 16.0,
                escape(&group.label)
            );
        }
        for (s, name) in panel.series.iter().enumerate() {
            let ly = bottom + 34.0 + 0.0 * s as f64;
            let lx = x0 + s as f64 * 150.0;
            let _ = write!(
                svg,
                r#"<rect x="{lx}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{ly}">{} ({})</text>"#,
                ly - 9.0,
                COLORS[s % COLORS.len()],
                lx + 14.0,
                escape(name),
                escape(&panel.unit)
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// A line chart: series of (x, y) points over optional shaded windows.
pub struct LineChart {
    /// Title above the chart.
    pub title: String,
    /// Tick positions on the x axis and their labels.
    pub x_ticks: Vec<(f64, String)>,
    /// The x axis runs from 0 to this.
    pub x_max: f64,
    /// The y axis runs from this...
    pub y_min: f64,
    /// ...to this.
    pub y_max: f64,
    /// What y measures, shown on the axis.
    pub y_label: String,
    /// Shaded x ranges with a label each (e.g. fault windows).
    pub shade: Vec<(f64, f64, String)>,
    /// Named series of points, drawn in x order.
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

/// Renders a line chart as one SVG document.
pub fn render_lines(c: &LineChart) -> String {
    let (w, h) = (760.0, 300.0);
    let (left, right, top, bottom) = (60.0, w - 20.0, 50.0, h - 60.0);
    let x_max = c.x_max.max(1e-9);
    let (y_min, y_max) = (c.y_min, c.y_max.max(c.y_min + 1e-9));
    let px = |x: f64| left + (right - left) * x / x_max;
    let py = |y: f64| bottom - (bottom - top) * (y - y_min) / (y_max - y_min);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="20" y="24" font-size="16" font-weight="bold">{}</text>"#,
        escape(&c.title)
    );
    for (i, (x0, x1, label)) in c.shade.iter().enumerate() {
        let _ = write!(
            svg,
            r##"<rect x="{:.1}" y="{top}" width="{:.1}" height="{}" fill="#e15759" fill-opacity="0.12"><title>{}</title></rect><text x="{:.1}" y="{}" font-size="9" fill="#a33">{}</text>"##,
            px(*x0),
            (px(*x1) - px(*x0)).max(1.0),
            bottom - top,
            escape(label),
            px(*x0) + 2.0,
            top - 4.0 - 10.0 * (i % 2) as f64,
            escape(label)
        );
    }
    let _ = write!(
        svg,
        r#"<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="black"/><line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="black"/>"#
    );
    for k in 0..=4 {
        let y = y_min + (y_max - y_min) * k as f64 / 4.0;
        let _ = write!(
            svg,
            r##"<line x1="{left}" y1="{0:.1}" x2="{right}" y2="{0:.1}" stroke="#ddd"/><text x="{1}" y="{2:.1}" text-anchor="end" font-size="10">{y:.2}</text>"##,
            py(y),
            left - 4.0,
            py(y) + 3.0
        );
    }
    let _ = write!(
        svg,
        r#"<text x="14" y="{:.1}" font-size="11" transform="rotate(-90 14 {0:.1})" text-anchor="middle">{}</text>"#,
        (top + bottom) / 2.0,
        escape(&c.y_label)
    );
    for (x, label) in &c.x_ticks {
        let _ =
            write!(svg, r#"<text x="{:.1}" y="{}" text-anchor="middle" font-size="10">{}</text>"#, px(*x), bottom + 14.0, escape(label));
    }
    for (s, (name, points)) in c.series.iter().enumerate() {
        let color = COLORS[s % COLORS.len()];
        let path: Vec<String> = points.iter().map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y))).collect();
        let _ = write!(svg, r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#, path.join(" "));
        for (x, y) in points {
            let _ = write!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{color}"><title>{}: {y:.3}</title></circle>"#,
                px(*x),
                py(*y),
                escape(name)
            );
        }
        let lx = left + s as f64 * 130.0;
        let _ = write!(
            svg,
            r#"<rect x="{lx}" y="{}" width="10" height="10" fill="{color}"/><text x="{}" y="{}">{}</text>"#,
            h - 22.0,
            lx + 14.0,
            h - 13.0,
            escape(name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_bar_per_value_with_escaped_labels() {
        let panel = Panel {
            title: "latency <p50>".into(),
            unit: "ms".into(),
            series: vec!["healthy".into(), "slow".into()],
            groups: vec![Group { label: "ONE".into(), values: vec![0.1, 0.2] }, Group { label: "ALL".into(), values: vec![0.3, 21.0] }],
        };
        let svg = render("demo", &[panel]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<rect x=").count(), 4 + 2, "four bars and two legend swatches");
        assert!(svg.contains("latency &lt;p50&gt;"));
    }

    #[test]
    fn line_chart_draws_each_series_and_window() {
        let c = LineChart {
            title: "fresh reads".into(),
            x_ticks: vec![(0.0, "0".into()), (10.0, "10 s".into())],
            x_max: 10.0,
            y_min: 0.0,
            y_max: 1.0,
            y_label: "P(fresh)".into(),
            shade: vec![(2.0, 4.0, "kill n2".into())],
            series: vec![("ONE".into(), vec![(0.0, 0.5), (10.0, 1.0)]), ("ALL".into(), vec![(0.0, 1.0), (10.0, 1.0)])],
        };
        let svg = render_lines(&c);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 4);
        assert!(svg.contains("kill n2") && svg.ends_with("</svg>\n"));
    }
}
