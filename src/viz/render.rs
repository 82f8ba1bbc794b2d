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
    let tmp = crate::fsutil::temp_beside(path, &format!(".{ext}")).map_err(|e| err(&e))?;
    match ext.as_str() {
        "png" => {
            let root = BitMapBackend::new(tmp.path(), size).into_drawing_area();
            fig.draw(&root).map_err(|e| err(&e))?;
            root.present().map_err(|e| err(&e))?;
        }
        "svg" => {
            let root = SVGBackend::new(tmp.path(), size).into_drawing_area();
            fig.draw(&root).map_err(|e| err(&e))?;
            root.present().map_err(|e| err(&e))?;
        }
        other => {
            return Err(format!(
                "{}: unsupported figure format `{other}` (use .png or .svg)",
                path.display()
            ))
        }
    }
    tmp.persist(path).map_err(|e| err(&e.error))?;
    Ok(())
}
