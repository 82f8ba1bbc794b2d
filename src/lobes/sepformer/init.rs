//! Fresh SepFormer parameters as PyTorch initialises the same modules, for training from
//! scratch (candle's `VarBuilder` starts every variable at zero): Conv1d/Conv2d/Linear/
//! ConvTranspose1d weights and biases uniform in `±1/sqrt(fan_in)` (torch's
//! `kaiming_uniform_(a=sqrt(5))` and its bias rule), `MultiheadAttention`'s `in_proj_weight`
//! Xavier-uniform with zero `in_proj_bias` / `out_proj.bias`, norms at weight 1 and bias 0,
//! PReLU at 0.25. The positional-encoding tables are left as they are. Seeded: the same seed
//! gives the same model.

use candle_core::Result;

use super::Sepformer;
use crate::nnet::init::{init_varmap, Init};

impl Sepformer {
    /// Re-initialises every parameter as PyTorch would for a fresh model (see the module
    /// docs), from `seed`.
    ///
    /// ```
    /// use candle_core::Device;
    /// # let hp = voxbrain::pretrained::hparams::Hparams::from_file(
    /// #     "tests/fixtures/separation/model_small/hyperparams.yaml", None).unwrap();
    /// let cfg = voxbrain::lobes::sepformer::SepformerConfig::from_hparams(&hp).unwrap();
    /// let model = voxbrain::lobes::sepformer::Sepformer::new(cfg, &Device::Cpu)?;
    /// model.init_like_torch(0)?;
    /// # Ok::<(), candle_core::Error>(())
    /// ```
    pub fn init_like_torch(&self, seed: u64) -> Result<()> {
        init_varmap(self.varmap(), seed, |name, shape| {
            if name.ends_with("pos_enc.pe") {
                Init::Keep
            } else if name.ends_with("in_proj_weight") {
                let (fan_out, fan_in) = (shape[0], shape[1]);
                Init::Uniform((6.0 / (fan_in + fan_out) as f64).sqrt())
            } else if name.ends_with("in_proj_bias") || name.ends_with("out_proj.bias") {
                Init::Constant(0.0)
            } else if name.contains("prelu") {
                Init::Constant(0.25)
            } else if name.contains("norm") {
                Init::Constant(if name.ends_with("weight") { 1.0 } else { 0.0 })
            } else {
                Init::Default
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lobes::sepformer::SepformerConfig;
    use crate::pretrained::hparams::Hparams;
    use candle_core::Device;

    #[test]
    fn torch_like_init_follows_the_rules_and_the_seed() -> Result<()> {
        let dir = env!("CARGO_MANIFEST_DIR");
        let hp = Hparams::from_file(
            format!("{dir}/tests/fixtures/separation/model_small/hyperparams.yaml"),
            None,
        )
        .unwrap();
        let cfg = SepformerConfig::from_hparams(&hp).unwrap();
        let (a, b) = (
            Sepformer::new(cfg.clone(), &Device::Cpu)?,
            Sepformer::new(cfg, &Device::Cpu)?,
        );
        let pe_before = a
            .varmap()
            .data()
            .lock()
            .unwrap()
            .iter()
            .find(|(k, _)| k.ends_with("pos_enc.pe"))
            .map(|(_, v)| v.as_tensor().copy())
            .unwrap()?;
        a.init_like_torch(7)?;
        b.init_like_torch(7)?;
        let va = a.varmap().data().lock().unwrap();
        let vb = b.varmap().data().lock().unwrap();
        for (name, var) in va.iter() {
            let x = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            assert_eq!(
                x,
                vb[name].as_tensor().flatten_all()?.to_vec1::<f32>()?,
                "{name}: seeded"
            );
            let max = x.iter().fold(0f32, |m, v| m.max(v.abs()));
            if name.ends_with("pos_enc.pe") {
                let pe = pe_before.flatten_all()?.to_vec1::<f32>()?;
                assert_eq!(x, pe, "positional table untouched");
            } else if name == "masknet.prelu.weight" {
                assert_eq!(x, vec![0.25]);
            } else if name.contains("norm") && name.ends_with("weight") {
                assert!(x.iter().all(|&v| v == 1.0), "{name}");
            } else if name.ends_with("_proj_bias")
                || name.ends_with("out_proj.bias")
                || name.contains("norm")
            {
                assert!(x.iter().all(|&v| v == 0.0), "{name}");
            } else if name == "encoder.conv1d.weight" {
                // Conv1d(1, 32, 16): fan_in 16, bound 0.25; 512 draws reach close to it.
                assert!(max <= 0.25 && max > 0.2, "{name}: {max}");
            } else if name.ends_with("in_proj_weight") {
                // Xavier over [96, 32]: sqrt(6 / 128).
                assert!(
                    max <= (6.0f32 / 128.0).sqrt() && max > 0.15,
                    "{name}: {max}"
                );
            } else {
                assert!(max > 0.0, "{name} left at zero");
            }
        }
        Ok(())
    }
}
