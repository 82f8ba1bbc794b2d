//! Writing a plotters figure to `.png` or `.svg` (chosen by extension) through a temporary
//! file and a rename, shared by every figure kind.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

/// A figure that can draw itself on any plotters backend.
pub(crate) trait Figure {
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> Result<(), Box<dyn std::error::Error>>
    where
        DB::ErrorType: 'static;
}

/// Draws `fig` at `size` pixels into `path`; errors name the path.
pub(crate) fn save_figure(fig: &impl Figure, size: (u32, u32), path: &Path) -> Result<(), String> {
    super::scatter::register_font();
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    if ext != "png" && ext != "svg" {
        return Err(format!(
            "{}: unsupported figure format `{ext}` (use .png or .svg)",
            path.display()
        ));
    }
    let draw = |tmp: &Path| -> std::io::Result<()> {
        let other = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
        if ext == "png" {
            let root = BitMapBackend::new(tmp, size).into_drawing_area();
            fig.draw(&root).map_err(|e| other(&e))?;
            root.present().map_err(|e| other(&e))
        } else {
            let root = SVGBackend::new(tmp, size).into_drawing_area();
            fig.draw(&root).map_err(|e| other(&e))?;
            root.present().map_err(|e| other(&e))
        }
    };
    crate::fsutil::write_atomic_via_path(path, &format!(".{ext}"), draw).map_err(|e| err(&e))
}
