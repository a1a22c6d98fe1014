//! `mlbuild metrics plot`: charts of recorded metrics across builds and sweep variants,
//! written as one SVG or as a self-contained HTML page embedding one SVG per chart.
//!
//! The data are `exp show`'s [`Experiment`]s, so the two never disagree; drawing is
//! `plotters`' SVG backend (text is left to the viewer's fonts, so no font files are
//! needed). Main function: [`run`].

use std::path::{Path, PathBuf};

use clap::Args;
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use super::exp::{collect, Experiment};
use crate::cli::Cli;
use crate::context::Context;
use crate::exit::{CmdResult, Code, Failure};

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// A target label (default: every target with recorded metrics).
    pub target: Option<String>,
    /// The report to write: `.svg` (one image, a chart under the other) or `.html` (a page
    /// with a section per target).
    #[arg(short, long, value_name = "FILE")]
    pub out: PathBuf,
    /// Only these metrics (repeatable; default: every metric recorded).
    #[arg(long, value_name = "NAME")]
    pub metric: Vec<String>,
    /// How many recent builds to plot per target.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub builds: usize,
}

/// One chart: a metric's values along an axis of builds or of variants.
struct Chart {
    target: String,
    title: String,
    metric: String,
    /// `(x label, value, highlighted)`, in drawing order.
    points: Vec<(String, f64, bool)>,
    /// Joined by a line (a series over builds) or not (variants).
    line: bool,
}

const WIDTH: u32 = 800;
const HEIGHT: u32 = 320;

#[derive(Clone, Copy)]
enum Format {
    Svg,
    Html,
}

pub fn run(cli: &Cli, args: &PlotArgs) -> CmdResult {
    let format = match args.out.extension().and_then(|e| e.to_str()) {
        Some("svg") => Format::Svg,
        Some("html" | "htm") => Format::Html,
        _ => {
            return Err(Failure::bad_input(miette::miette!(
                help = "name the file `report.svg` or `report.html`",
                "cannot tell the report's format from `{}`: it must end in `.svg` or `.html`",
                args.out.display()
            )))
        }
    };
    let ctx = Context::load(cli)?;
    let experiments = collect(&ctx, args.target.as_deref(), args.builds.max(1))?;
    let charts = charts(&experiments, &args.metric);
    if charts.is_empty() {
        return Err(Failure::bad_input(miette::miette!(
            help = "`mlbuild exp show` lists the metrics recorded",
            "no recorded metric is named {}",
            args.metric
                .iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let document = match format {
        Format::Svg => draw(&charts.iter().collect::<Vec<_>>())?,
        Format::Html => html(&ctx, &experiments, &charts)?,
    };
    let out = crate::commands::verify::resolve(cli, &args.out);
    write(&out, &document)?;
    println!(
        "wrote {} ({} charts of {} targets)",
        args.out.display(),
        charts.len(),
        experiments.len()
    );
    Ok(Code::Ok)
}

fn write(path: &Path, text: &str) -> Result<(), Failure> {
    std::fs::write(path, text)
        .map_err(|e| Failure::bad_input(miette::miette!("cannot write `{}`: {e}", path.display())))
}

/// A chart per metric over the builds (oldest first), then one per metric over the
/// variants of the latest sweep (the selected one highlighted); only `only` metrics when
/// given.
fn charts(experiments: &[Experiment], only: &[String]) -> Vec<Chart> {
    let wanted = |m: &String| only.is_empty() || only.contains(m);
    let mut charts = Vec::new();
    for e in experiments {
        let metrics: std::collections::BTreeSet<&String> = e
            .builds
            .iter()
            .flat_map(|b| b.metrics.keys())
            .filter(|m| wanted(m))
            .collect();
        for metric in metrics {
            let points = e
                .builds
                .iter()
                .rev()
                .filter_map(|b| {
                    let v = *b.metrics.get(metric)?;
                    let x = match &b.name {
                        Some(name) => format!("#{} {name}", b.invocation_id),
                        None => format!("#{}", b.invocation_id),
                    };
                    Some((x, v, false))
                })
                .collect();
            charts.push(Chart {
                target: e.label.clone(),
                title: format!("{} {metric} across builds", e.label),
                metric: metric.clone(),
                points,
                line: true,
            });
        }
        let metrics: std::collections::BTreeSet<&String> = e
            .variants
            .iter()
            .flat_map(|v| v.metrics.keys())
            .filter(|m| wanted(m))
            .collect();
        for metric in metrics {
            let points = e
                .variants
                .iter()
                .filter_map(|v| {
                    let value = *v.metrics.get(metric)?;
                    // The swept values are what tells variants apart.
                    let x = v.label.strip_prefix(&e.label).unwrap_or(&v.label);
                    Some((x.to_owned(), value, v.selected))
                })
                .collect();
            let build = e.variants.first().map_or(0, |v| v.invocation_id);
            charts.push(Chart {
                target: e.label.clone(),
                title: format!("{} {metric} per variant (build #{build})", e.label),
                metric: metric.clone(),
                points,
                line: false,
            });
        }
    }
    charts
}

/// The charts as one SVG document, one under the other.
fn draw(charts: &[&Chart]) -> Result<String, Failure> {
    let failed = |e: String| Failure::store(miette::miette!("cannot draw the charts: {e}"));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT * charts.len() as u32))
            .into_drawing_area();
        root.fill(&WHITE).map_err(|e| failed(e.to_string()))?;
        for (area, chart) in root.split_evenly((charts.len(), 1)).iter().zip(charts) {
            draw_chart(area, chart).map_err(|e| failed(e.to_string()))?;
        }
        root.present().map_err(|e| failed(e.to_string()))?;
    }
    Ok(svg)
}

fn draw_chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    chart: &Chart,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let n = chart.points.len() as i32;
    let (lo, hi) = y_range(chart.points.iter().map(|p| p.1));
    let mut c = ChartBuilder::on(area)
        .caption(&chart.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((0..n).into_segmented(), lo..hi)?;
    let labels: Vec<&str> = chart.points.iter().map(|p| p.0.as_str()).collect();
    let x_label = |x: &SegmentValue<i32>| match x {
        SegmentValue::CenterOf(i) => labels
            .get(*i as usize)
            .map_or(String::new(), |l| (*l).to_owned()),
        _ => String::new(),
    };
    c.configure_mesh()
        .disable_x_mesh()
        .x_labels(chart.points.len().max(1))
        .x_label_formatter(&x_label)
        .y_desc(chart.metric.as_str())
        .draw()?;
    let at = |i: usize, v: f64| (SegmentValue::CenterOf(i as i32), v);
    if chart.line {
        c.draw_series(LineSeries::new(
            chart.points.iter().enumerate().map(|(i, p)| at(i, p.1)),
            BLUE.stroke_width(2),
        ))?;
    }
    c.draw_series(chart.points.iter().enumerate().map(|(i, p)| {
        let (color, size) = if p.2 { (RED, 7) } else { (BLUE, 4) };
        Circle::new(at(i, p.1), size, color.filled())
    }))?;
    Ok(())
}

/// A y range around `values` with some room, never empty.
fn y_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        return (0.0, 1.0);
    }
    let pad = if hi > lo {
        (hi - lo) * 0.1
    } else {
        (lo.abs() * 0.1).max(0.5)
    };
    (lo - pad, hi + pad)
}

/// A page with a section per target: its charts as inline SVG and the values drawn as a
/// table, nothing loaded from elsewhere.
fn html(ctx: &Context, experiments: &[Experiment], charts: &[Chart]) -> Result<String, Failure> {
    let mut page = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>mlbuild metrics</title>\n<style>\
         body{font-family:sans-serif;margin:2em;color:#222}\
         table{border-collapse:collapse;margin:1em 0}\
         td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}\
         th:first-child,td:first-child{text-align:left}\
         </style>\n</head>\n<body>\n",
    );
    page.push_str(&format!(
        "<h1>Metrics of {}</h1>\n",
        escape(&ctx.ws.root.display().to_string())
    ));
    for e in experiments {
        let own: Vec<&Chart> = charts.iter().filter(|c| c.target == e.label).collect();
        if own.is_empty() {
            continue;
        }
        page.push_str(&format!("<section>\n<h2>{}</h2>\n", escape(&e.label)));
        for chart in own {
            page.push_str(&format!("<figure>\n{}\n", draw(&[chart])?));
            page.push_str(&format!(
                "<figcaption>{}</figcaption>\n<table><tr><th></th><th>{}</th></tr>\n",
                escape(&chart.title),
                escape(&chart.metric)
            ));
            for (x, v, highlighted) in &chart.points {
                let mark = if *highlighted { " (selected)" } else { "" };
                page.push_str(&format!(
                    "<tr><td>{}{mark}</td><td>{}</td></tr>\n",
                    escape(x),
                    mlbuild_exec::fmt_value(*v)
                ));
            }
            page.push_str("</table>\n</figure>\n");
        }
        page.push_str("</section>\n");
    }
    page.push_str("</body>\n</html>\n");
    Ok(page)
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn y_range_is_never_empty() {
        assert_eq!(y_range([].into_iter()), (0.0, 1.0));
        assert_eq!(y_range([2.0].into_iter()), (1.5, 2.5));
        let (lo, hi) = y_range([0.0, 1.0, f64::NAN].into_iter());
        assert!((lo + 0.1).abs() < 1e-12 && (hi - 1.1).abs() < 1e-12);
    }

    #[test]
    fn draws_a_chart_per_panel() {
        let chart = |title: &str, line| Chart {
            target: "//m:t".into(),
            title: title.into(),
            metric: "f1".into(),
            points: vec![("#1".into(), 0.5, false), ("#2 v1".into(), 0.75, true)],
            line,
        };
        let (a, b) = (
            chart("f1 across builds", true),
            chart("f1 per variant", false),
        );
        let Ok(svg) = draw(&[&a, &b]) else {
            panic!("drawing failed")
        };
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("f1 across builds") && svg.contains("f1 per variant"));
        assert!(svg.contains("#2 v1"));
        // Two points each, the selected one in red; one line (the others are the mesh).
        assert_eq!(svg.matches("<circle").count(), 4);
        assert_eq!(svg.matches("fill=\"#FF0000\"").count(), 2);
        let line = |l: &&str| l.contains("<polyline") && l.contains("stroke=\"#0000FF\"");
        assert_eq!(svg.lines().filter(line).count(), 1, "{svg}");
    }
}
