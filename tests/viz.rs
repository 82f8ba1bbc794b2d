//! PCA of speaker embeddings and the labelled scatter plot (PNG and SVG).

use voxbrain::viz::{audio_html, scatter_plot, Pca};

#[test]
fn pca_separates_two_clusters_and_plots_render() {
    // Two speakers' "embeddings": clusters along a diagonal in 8-D with noise.
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    for i in 0..20 {
        let c = if i % 2 == 0 { 1.0 } else { -1.0 };
        let noise = (i as f32 * 0.37).sin() * 0.1;
        rows.push(
            (0..8)
                .map(|d| c * (d as f32 + 1.0) * 0.3 + noise * (d as f32 % 3.0))
                .collect::<Vec<f32>>(),
        );
        labels.push(if c > 0.0 {
            "1272".to_string()
        } else {
            "1462".to_string()
        });
    }
    let pca = Pca::fit(&rows, 2).unwrap();
    assert!(
        pca.explained_variance_ratio[0] > 0.9,
        "{:?}",
        pca.explained_variance_ratio
    );
    let z = pca.transform(&rows);
    // The first component splits the speakers.
    for (p, l) in z.iter().zip(&labels) {
        assert_eq!(
            p[0] > 0.0,
            z[0][0] > 0.0 && l == "1272" || z[0][0] <= 0.0 && l == "1462"
        );
    }
    let pts: Vec<(f64, f64)> = z.iter().map(|p| (p[0], p[1])).collect();
    let dir = tempfile::tempdir().unwrap();
    for name in ["pca.png", "pca.svg"] {
        let p = dir.path().join(name);
        scatter_plot(&pts, &labels, "Speaker embeddings (PCA)", &p).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        if name.ends_with("png") {
            assert_eq!(&bytes[1..4], b"PNG");
            assert!(
                bytes.len() > 5_000,
                "a real image, got {} bytes",
                bytes.len()
            );
        } else {
            let s = String::from_utf8(bytes).unwrap();
            assert!(
                s.contains("<svg") && s.contains("1272") && s.contains("Principal Component 1")
            );
        }
    }
    assert!(scatter_plot(&pts, &labels, "t", dir.path().join("x.jpg")).is_err());
    assert!(Pca::fit(&rows[..1], 2).is_err());
    assert!(audio_html(&[0.0; 100], 8000).unwrap().contains("base64"));
}
