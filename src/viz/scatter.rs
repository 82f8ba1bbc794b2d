//! A labelled 2-D scatter plot (the tutorial's PCA of speaker embeddings) with plotters, as PNG
//! or SVG depending on the file extension. Points are coloured by label, with one legend entry
//! per label (per-point text overlapped as soon as a speaker had several utterances).

use std::path::Path;

use plotters::prelude::*;

static FONT: &[u8] = include_bytes!("fonts/DejaVuSansMono.ttf");

pub(crate) fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The bundled DejaVu font (see fonts/DejaVu-LICENSE.txt) renders PNG text without any
        // system font library.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Draws `points` labelled by `labels` into `path` (`.png` or `.svg`), written atomically.
///
/// ```no_run
/// voxbrain::viz::scatter_plot(&[(0.0, 1.0), (1.0, 0.5)], &["1272".into(), "1462".into()],
///     "Speaker embeddings (PCA)", "pca.png").unwrap();
/// ```
pub fn scatter_plot(
    points: &[(f64, f64)],
    labels: &[String],
    title: &str,
    path: impl AsRef<Path>,
) -> Result<(), String> {
    let path = path.as_ref();
    if points.len() != labels.len() {
        return Err(format!(
            "{} points but {} labels",
            points.len(),
            labels.len()
        ));
    }
    super::render::save_figure(
        &Scatter {
            points,
            labels,
            title,
        },
        (800, 600),
        path,
    )
}

struct Scatter<'a> {
    points: &'a [(f64, f64)],
    labels: &'a [String],
    title: &'a str,
}

impl super::render::Figure for Scatter<'_> {
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, plotters::coord::Shift>,
    ) -> Result<(), Box<dyn std::error::Error>>
    where
        DB::ErrorType: 'static,
    {
        draw(root, self.points, self.labels, self.title)
    }
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    points: &[(f64, f64)],
    labels: &[String],
    title: &str,
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if !x0.is_finite() {
        (x0, x1, y0, y1) = (-1.0, 1.0, -1.0, 1.0);
    }
    let (px, py) = (((x1 - x0) * 0.1).max(1e-6), ((y1 - y0) * 0.1).max(1e-6));
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((x0 - px)..(x1 + px), (y0 - py)..(y1 + py))?;
    chart
        .configure_mesh()
        .x_desc("Principal Component 1")
        .y_desc("Principal Component 2")
        .label_style(("sans-serif", 14))
        .draw()?;
    let mut uniq: Vec<&String> = labels.iter().collect();
    uniq.sort();
    uniq.dedup();
    for (k, &lab) in uniq.iter().enumerate() {
        let c = Palette99::pick(k).to_rgba();
        let mine = points
            .iter()
            .zip(labels)
            .filter(|(_, l)| *l == lab)
            .map(|(&(x, y), _)| Circle::new((x, y), 6, c.filled()));
        chart
            .draw_series(mine)?
            .label(lab.as_str())
            .legend(move |(x, y)| Circle::new((x, y), 5, c.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 14))
        .draw()?;
    Ok(())
}
