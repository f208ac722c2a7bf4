//! Telemetry charts drawn on the server as SVG (DESIGN.md: no script in the console).
//! A chart holds only numbers and field names; the template writes them out with
//! askama's escaping, so nothing a device sends can become markup.

use crate::db::devices::{FieldKind, FieldSpec};

/// Most samples drawn in a chart.
pub const MAX_SAMPLES: i64 = 500;

/// Drawing area, in `viewBox` units.
pub const WIDTH: f64 = 600.0;
pub const HEIGHT: f64 = 160.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 24.0;

/// One panel: one numeric field's line over time, with its own value range.
#[derive(Debug, Clone)]
pub struct Chart {
    pub field: String,
    pub unit: String,
    /// `x,y` pairs for the polyline, from numbers only.
    pub points: String,
    pub samples: usize,
    pub min: String,
    pub max: String,
    pub from: String,
    pub to: String,
    // Axis geometry, for the template.
    pub left: String,
    pub right: String,
    pub top: String,
    pub bottom: String,
    pub label_x: String,
    pub time_y: String,
}

/// A number as a short label: whole numbers without decimals, others with up to 3.
pub fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

fn coord(v: f64) -> String {
    format!("{v:.1}")
}

/// Charts for the numeric fields of `fields` from `samples` (time in ms, JSON payload),
/// given newest first as stored. Fields without a single numeric value get no chart.
pub fn charts(
    fields: &[FieldSpec],
    samples: &[(i64, String)],
    fmt_time: impl Fn(i64) -> String,
) -> Vec<Chart> {
    let parsed: Vec<(i64, serde_json::Map<String, serde_json::Value>)> = samples
        .iter()
        .rev()
        .take(MAX_SAMPLES as usize)
        .filter_map(|(at, payload)| match serde_json::from_str(payload) {
            Ok(serde_json::Value::Object(map)) => Some((*at, map)),
            _ => None,
        })
        .collect();
    fields
        .iter()
        .filter(|f| matches!(f.kind, FieldKind::Number | FieldKind::Integer))
        .filter_map(|f| {
            let series: Vec<(i64, f64)> = parsed
                .iter()
                .filter_map(|(at, map)| {
                    map.get(&f.name)
                        .and_then(serde_json::Value::as_f64)
                        .filter(|v| v.is_finite())
                        .map(|v| (*at, v))
                })
                .collect();
            draw(f, &series, &fmt_time)
        })
        .collect()
}

fn draw(
    field: &FieldSpec,
    series: &[(i64, f64)],
    fmt_time: &impl Fn(i64) -> String,
) -> Option<Chart> {
    let (first, last) = (series.first()?, series.last()?);
    let (min, max) = series
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (_, v)| {
            (lo.min(*v), hi.max(*v))
        });
    let (t0, t1) = (first.0, last.0);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let n = series.len();
    let points = series
        .iter()
        .enumerate()
        .map(|(i, (at, v))| {
            let fx = if t1 > t0 {
                (at - t0) as f64 / (t1 - t0) as f64
            } else if n > 1 {
                i as f64 / (n - 1) as f64
            } else {
                0.5
            };
            let fy = if max > min {
                (max - v) / (max - min)
            } else {
                0.5
            };
            format!("{},{}", coord(LEFT + fx * plot_w), coord(TOP + fy * plot_h))
        })
        .collect::<Vec<_>>()
        .join(" ");
    Some(Chart {
        field: field.name.clone(),
        unit: field.unit.clone(),
        points,
        samples: n,
        min: fmt_num(min),
        max: fmt_num(max),
        from: fmt_time(t0.div_euclid(1000)),
        to: fmt_time(t1.div_euclid(1000)),
        left: coord(LEFT),
        right: coord(WIDTH - RIGHT),
        top: coord(TOP),
        bottom: coord(HEIGHT - BOTTOM),
        label_x: coord(LEFT - 4.0),
        time_y: coord(HEIGHT - 6.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, kind: FieldKind) -> FieldSpec {
        FieldSpec {
            name: name.into(),
            kind,
            unit: String::new(),
            purpose: "test".into(),
            personal: false,
            retention_days: None,
            optional: false,
        }
    }

    #[test]
    fn one_chart_per_numeric_field_scaled_to_its_range() {
        let fields = [
            field("temperature", FieldKind::Number),
            field("label", FieldKind::String),
            field("seq", FieldKind::Integer),
            field("unused", FieldKind::Number),
        ];
        // Newest first, as stored; one payload is not JSON and is skipped.
        let samples = vec![
            (3000, r#"{"temperature": 30.5, "seq": 3}"#.to_owned()),
            (2000, "not json".to_owned()),
            (
                1000,
                r#"{"temperature": 10, "seq": 1, "label": "<script>"}"#.to_owned(),
            ),
        ];
        let charts = charts(&fields, &samples, |t| t.to_string());
        assert_eq!(charts.len(), 2);
        let t = &charts[0];
        assert_eq!((t.field.as_str(), t.samples), ("temperature", 2));
        assert_eq!((t.min.as_str(), t.max.as_str()), ("10", "30.5"));
        assert_eq!((t.from.as_str(), t.to.as_str()), ("1", "3"));
        // Oldest at the left and lowest at the bottom; newest at the right and top.
        assert_eq!(t.points, "64.0,136.0 592.0,12.0");
        assert!(charts.iter().all(|c| {
            c.points
                .chars()
                .all(|ch| ch.is_ascii_digit() || ".-, ".contains(ch))
        }));
    }

    #[test]
    fn a_flat_or_single_sample_line_stays_inside_the_box() {
        let fields = [field("x", FieldKind::Number)];
        let one = charts(&fields, &[(5, r#"{"x": 2}"#.into())], |t| t.to_string());
        assert_eq!(one[0].points, "328.0,74.0");
        assert_eq!(fmt_num(1.23456), "1.235");
        assert_eq!(fmt_num(-4.0), "-4");
    }
}
