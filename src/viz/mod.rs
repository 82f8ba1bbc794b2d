//! Figures and notebook display: PCA of embeddings, plotters scatter plots (PNG and SVG), and
//! inline display of images and audio in evcxr Jupyter notebooks.

pub mod curves;
pub mod display;
pub mod pca;
mod render;
pub mod scatter;

pub use curves::{line_plot, Curve};
pub use display::{audio_html, show_audio, show_html, show_image};
pub use pca::Pca;
pub use scatter::scatter_plot;
