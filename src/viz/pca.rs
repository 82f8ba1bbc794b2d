//! Principal component analysis (nalgebra's SVD), with scikit-learn's sign convention so plots
//! look like the tutorial's `sklearn.decomposition.PCA`.

use nalgebra::DMatrix;

/// A fitted PCA.
#[derive(Debug, Clone)]
pub struct Pca {
    /// Mean of each input dimension.
    pub mean: Vec<f64>,
    /// `n_components` rows of `dim` loadings.
    pub components: Vec<Vec<f64>>,
    /// Fraction of the variance each component explains.
    pub explained_variance_ratio: Vec<f64>,
}

impl Pca {
    /// Fits `n_components` on `rows` (each a vector of the same length).
    ///
    /// ```
    /// use voxbrain::viz::Pca;
    /// let rows = vec![vec![0.0, 0.0], vec![1.0, 1.0], vec![2.0, 2.1]];
    /// let pca = Pca::fit(&rows, 1).unwrap();
    /// assert!(pca.explained_variance_ratio[0] > 0.99);
    /// let z = pca.transform(&rows);
    /// assert_eq!(z[0].len(), 1);
    /// ```
    pub fn fit(rows: &[Vec<f32>], n_components: usize) -> Result<Self, String> {
        let n = rows.len();
        let d = rows.first().map(|r| r.len()).unwrap_or(0);
        if n < 2 || d == 0 {
            return Err(format!("PCA needs at least 2 rows of data, got {n}"));
        }
        if rows.iter().any(|r| r.len() != d) {
            return Err("PCA rows must all have the same length".into());
        }
        let k = n_components.min(d).min(n);
        let mean: Vec<f64> = (0..d)
            .map(|j| rows.iter().map(|r| r[j] as f64).sum::<f64>() / n as f64)
            .collect();
        let x = DMatrix::from_fn(n, d, |i, j| rows[i][j] as f64 - mean[j]);
        let svd = x.svd(true, true);
        let (u, vt) = (svd.u.ok_or("SVD failed")?, svd.v_t.ok_or("SVD failed")?);
        let s = svd.singular_values;
        // nalgebra does not sort singular values: order them.
        let mut order: Vec<usize> = (0..s.len()).collect();
        order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
        let total: f64 = s.iter().map(|v| v * v).sum();
        let mut components = Vec::with_capacity(k);
        let mut ratio = Vec::with_capacity(k);
        for &c in order.iter().take(k) {
            let mut comp: Vec<f64> = vt.row(c).iter().copied().collect();
            // sklearn's svd_flip: the largest |u| entry of each component is positive.
            let col = u.column(c);
            let (mut best, mut sign) = (0.0f64, 1.0f64);
            for v in col.iter() {
                if v.abs() > best {
                    best = v.abs();
                    sign = v.signum();
                }
            }
            comp.iter_mut().for_each(|x| *x *= sign);
            components.push(comp);
            ratio.push(if total > 0.0 {
                s[c] * s[c] / total
            } else {
                0.0
            });
        }
        Ok(Self {
            mean,
            components,
            explained_variance_ratio: ratio,
        })
    }

    /// Projects rows onto the components.
    pub fn transform(&self, rows: &[Vec<f32>]) -> Vec<Vec<f64>> {
        rows.iter()
            .map(|r| {
                self.components
                    .iter()
                    .map(|c| {
                        c.iter()
                            .zip(r)
                            .zip(&self.mean)
                            .map(|((w, x), m)| w * (*x as f64 - m))
                            .sum()
                    })
                    .collect()
            })
            .collect()
    }
}
