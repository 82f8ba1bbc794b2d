//! Loss curves (training per step, validation per epoch) as a plotters line chart, PNG or SVG
//! by extension, written atomically; `show_image` puts it inline in an evcxr notebook.

use std::path::Path;

use plotters::prelude::*;

/// One named curve: `(x, y)` points (e.g. optimizer step, loss).
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// Legend label.
    pub label: String,
    /// The points, in x order.
    pub points: Vec<(f64, f64)>,
}

/// Draws `curves` into `path` (`.png` or `.svg`).
///
/// ```
/// use voxbrain::viz::{line_plot, Curve};
/// let dir = tempfile::tempdir().unwrap();
/// let c = Curve { label: "train".into(), points: vec![(1.0, 3.0), (2.0, 2.0), (3.0, 1.5)] };
/// line_plot(&[c], "Fine-tuning loss", "step", "loss", dir.path().join("loss.svg")).unwrap();
/// assert!(dir.path().join("loss.svg").exists());
/// ```
pub fn line_plot(
    curves: &[Curve],
    title: &str,
    x_desc: &str,
    y_desc: &str,
    path: impl AsRef<Path>,
) -> Result<(), String> {
    let fig = LinePlot {
        curves,
        title,
        x_desc,
        y_desc,
    };
    super::render::save_figure(&fig, (800, 500), path.as_ref())
}

struct LinePlot<'a> {
    curves: &'a [Curve],
    title: &'a str,
    x_desc: &'a str,
    y_desc: &'a str,
}

impl super::render::Figure for LinePlot<'_> {
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, plotters::coord::Shift>,
    ) -> Result<(), Box<dyn std::error::Error>>
    where
        DB::ErrorType: 'static,
    {
        draw(root, self.curves, self.title, self.x_desc, self.y_desc)
    }
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    curves: &[Curve],
    title: &str,
    x_desc: &str,
    y_desc: &str,
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let pts = curves
        .iter()
        .flat_map(|c| c.points.iter())
        .filter(|p| p.1.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in pts {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if !x0.is_finite() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let py = ((y1 - y0) * 0.08).max(1e-6);
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1.max(x0 + 1e-9), (y0 - py)..(y1 + py))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style(("sans-serif", 14))
        .draw()?;
    for (i, c) in curves.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let pts: Vec<(f64, f64)> = c
            .points
            .iter()
            .copied()
            .filter(|p| p.1.is_finite())
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
            .label(c.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    Ok(())
}
