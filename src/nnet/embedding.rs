//! `speechbrain.nnet.embedding.Embedding`: a `torch.nn.Embedding` held as `.Embedding`.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::param;

/// A lookup table of `num_embeddings` vectors (`<path>.Embedding.weight`
/// `[num_embeddings, embedding_dim]`).
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// use voxbrain::nnet::embedding::Embedding;
/// let vm = VarMap::new();
/// let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
/// let emb = Embedding::new(10, 4, vb.pp("emb")).unwrap();
/// let ids = Tensor::new(&[1u32, 7, 7], &Device::Cpu).unwrap();
/// assert_eq!(emb.forward(&ids, false).unwrap().dims(), &[3, 4]);
/// ```
#[derive(Debug, Clone)]
pub struct Embedding {
    pub(crate) weight: Tensor,
}

impl Embedding {
    /// Builds the table (normal init when not loaded).
    pub fn new(num_embeddings: usize, embedding_dim: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.pp("Embedding").get_with_hints(
            (num_embeddings, embedding_dim),
            "weight",
            candle_nn::Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        )?;
        Ok(Self { weight })
    }

    /// Number of entries.
    pub fn num_embeddings(&self) -> usize {
        self.weight.dim(0).unwrap_or(0)
    }

    /// Looks up integer ids of any shape; the result has one more (last) dimension.
    pub fn forward(&self, ids: &Tensor, train: bool) -> Result<Tensor> {
        let n = self.num_embeddings();
        let flat = ids.flatten_all()?.to_dtype(candle_core::DType::U32)?;
        if let Some(bad) = flat
            .to_vec1::<u32>()?
            .into_iter()
            .find(|&i| i as usize >= n)
        {
            candle_core::bail!("Embedding: token id {bad} out of range (vocabulary of {n})");
        }
        let w = param(&self.weight, train);
        let out = w.index_select(&flat, 0)?;
        let mut shape = ids.dims().to_vec();
        shape.push(w.dim(1)?);
        out.reshape(shape)
    }
}
