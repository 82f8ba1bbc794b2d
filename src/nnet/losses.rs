//! Losses with SpeechBrain's conventions (`speechbrain.nnet.losses`): relative lengths mask
//! the padding, `label_smoothing` as in `compute_masked_loss`, and the reductions `mean`,
//! `batchmean`, `batch` and `none`.
//!
//! [`nll_loss`] is made of candle ops (autograd for free); [`ctc_loss`] runs the CTC
//! forward-backward recursions on the host in f64 and hands candle the gradient through a
//! custom op, since candle has no CTC. The separation loss [`get_si_snr_with_pitwrapper`]
//! (negative SI-SNR under the best permutation) is candle ops too.

use candle_core::{DType, Tensor, D};

use super::ctc::{ctc_forward_backward, CtcOp};
pub use super::pit::{
    get_si_snr_with_pitwrapper, pit_si_snr_loss, si_snr_loss_matrix, EPS as SI_SNR_EPS,
};

/// How per-position losses are reduced (SpeechBrain's `reduction` argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reduction {
    /// Sum over valid positions / number of valid positions (SpeechBrain's default).
    #[default]
    Mean,
    /// Sum over valid positions / batch size.
    BatchMean,
    /// One value per utterance: its sum / its valid positions (`[B]`).
    Batch,
    /// No reduction: the masked per-position losses.
    None,
}

impl std::str::FromStr for Reduction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "mean" => Ok(Self::Mean),
            "batchmean" => Ok(Self::BatchMean),
            "batch" => Ok(Self::Batch),
            "none" => Ok(Self::None),
            o => Err(format!(
                "unknown reduction `{o}` (mean, batchmean, batch, none)"
            )),
        }
    }
}

/// `speechbrain.dataio.dataio.length_to_mask(length * max_len - 1e-6, max_len)` as SpeechBrain's
/// `compute_length_mask` builds it (f32 arithmetic, as torch does), `[B, max_len]`.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let lens = Tensor::new(&[1f32, 0.4], &Device::Cpu).unwrap();
/// let m = voxbrain::nnet::losses::relative_length_mask(&lens, 5).unwrap();
/// assert_eq!(m.to_vec2::<f32>().unwrap(), vec![vec![1.0; 5], vec![1.0, 1.0, 0.0, 0.0, 0.0]]);
/// ```
pub fn relative_length_mask(length: &Tensor, max_len: usize) -> candle_core::Result<Tensor> {
    let lens = length.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    let mut mask = vec![0f32; lens.len() * max_len];
    for (b, &l) in lens.iter().enumerate() {
        let limit = l * max_len as f32 - 1e-6;
        for j in 0..max_len {
            if (j as f32) < limit {
                mask[b * max_len + j] = 1.0;
            }
        }
    }
    Tensor::from_vec(mask, (lens.len(), max_len), length.device())
}

/// SpeechBrain's `truncate`: predictions and targets may differ in length by at most
/// `allowed_len_diff` steps; the longer one is cut.
fn truncate(
    log_probs: &Tensor,
    targets: &Tensor,
    allowed_len_diff: usize,
) -> candle_core::Result<(Tensor, Tensor)> {
    let (lp, lt) = (log_probs.dim(1)?, targets.dim(1)?);
    if lp == lt {
        return Ok((log_probs.clone(), targets.clone()));
    }
    if lp.abs_diff(lt) > allowed_len_diff {
        candle_core::bail!(
            "nll_loss: predictions ({lp} steps) and targets ({lt} steps) differ by more than \
             allowed_len_diff={allowed_len_diff}"
        );
    }
    let n = lp.min(lt);
    Ok((log_probs.narrow(1, 0, n)?, targets.narrow(1, 0, n)?))
}

/// `speechbrain.nnet.losses.nll_loss`: negative log-likelihood of `targets` `[B, L]` (integer
/// ids) under `log_probs` `[B, L, C]`, masked by the relative `length` `[B]` (`None`: all
/// positions), with SpeechBrain's label smoothing (`-ls * mean_c(log_probs) + (1 - ls) * nll`).
///
/// ```
/// use candle_core::{Device, Tensor, D};
/// use voxbrain::nnet::losses::{nll_loss, Reduction};
/// let logits = Tensor::new(&[[[2f32, 0.0, 0.0], [0.0, 2.0, 0.0]]], &Device::Cpu).unwrap();
/// let lp = candle_nn::ops::log_softmax(&logits, D::Minus1).unwrap();
/// let y = Tensor::new(&[[0u32, 1]], &Device::Cpu).unwrap();
/// let loss = nll_loss(&lp, &y, None, 0.0, Reduction::Mean).unwrap();
/// assert!((loss.to_scalar::<f32>().unwrap() - 0.2395).abs() < 1e-3);
/// ```
pub fn nll_loss(
    log_probs: &Tensor,
    targets: &Tensor,
    length: Option<&Tensor>,
    label_smoothing: f64,
    reduction: Reduction,
) -> candle_core::Result<Tensor> {
    let (log_probs, targets) = truncate(log_probs, targets, 3)?;
    let (b, l, c) = log_probs.dims3()?;
    let targets = targets.to_dtype(DType::U32)?;
    if targets.dims() != [b, l] {
        candle_core::bail!(
            "nll_loss: targets {:?} do not match predictions {:?}",
            targets.dims(),
            log_probs.dims()
        );
    }
    let ids = targets.flatten_all()?.to_vec1::<u32>()?;
    if let Some(bad) = ids.iter().find(|&&i| i as usize >= c) {
        candle_core::bail!("nll_loss: target id {bad} outside the {c} classes");
    }
    let picked = log_probs
        .gather(&targets.unsqueeze(2)?.contiguous()?, 2)?
        .squeeze(2)?
        .neg()?; // [B, L]
    let mask = match length {
        Some(len) => relative_length_mask(len, l)?,
        None => Tensor::ones((b, l), DType::F32, log_probs.device())?,
    }
    .to_dtype(log_probs.dtype())?;
    let loss = (picked * &mask)?;
    let loss = reduce(&loss, &mask, reduction)?;
    if label_smoothing == 0.0 {
        return Ok(loss);
    }
    let reg = (log_probs.mean(D::Minus1)? * &mask)?;
    let reg = reduce(&reg, &mask, reduction)?;
    (reg * -label_smoothing)? + (loss * (1.0 - label_smoothing))?
}

/// SpeechBrain's `reduce_loss` over a masked `[B, L]` loss.
fn reduce(loss: &Tensor, mask: &Tensor, reduction: Reduction) -> candle_core::Result<Tensor> {
    let n = loss.dim(0)? as f64;
    match reduction {
        Reduction::Mean => loss.sum_all()?.broadcast_div(&mask.sum_all()?),
        Reduction::BatchMean => loss.sum_all()? / n,
        Reduction::Batch => loss.sum(1)?.div(&mask.sum(1)?),
        Reduction::None => Ok(loss.clone()),
    }
}

/// `speechbrain.nnet.losses.ctc_loss`: CTC of `targets` `[B, S]` (padded ids) under `log_probs`
/// `[B, T, C]`, with relative `input_lens` and `target_lens` (rounded as SpeechBrain does),
/// `blank_index`, and torch's `zero_infinity=True` (an impossible alignment gives loss 0 and
/// no gradient). `Mean` divides each utterance's loss by its target length, then averages
/// (torch's `mean`); `BatchMean` is the sum / B; `Batch` per utterance / target length.
///
/// ```
/// use candle_core::{Device, Tensor, D};
/// use voxbrain::nnet::losses::{ctc_loss, Reduction};
/// let dev = Device::Cpu;
/// let lp = candle_nn::ops::log_softmax(&Tensor::zeros((1, 4, 3), candle_core::DType::F32, &dev).unwrap(), D::Minus1).unwrap();
/// let y = Tensor::new(&[[1u32, 2]], &dev).unwrap();
/// let one = Tensor::new(&[1f32], &dev).unwrap();
/// let loss = ctc_loss(&lp, &y, &one, &one, 0, Reduction::Batch).unwrap();
/// assert!(loss.to_vec1::<f32>().unwrap()[0] > 0.0);
/// ```
pub fn ctc_loss(
    log_probs: &Tensor,
    targets: &Tensor,
    input_lens: &Tensor,
    target_lens: &Tensor,
    blank_index: usize,
    reduction: Reduction,
) -> candle_core::Result<Tensor> {
    let (b, t, c) = log_probs.dims3()?;
    let s = targets.dim(1)?;
    let abs = |rel: &Tensor, n: usize| -> candle_core::Result<Vec<usize>> {
        Ok(rel
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?
            .iter()
            .map(|&r| (r * n as f32).round().max(0.0) as usize)
            .collect())
    };
    let in_lens = abs(input_lens, t)?;
    let tg_lens = abs(target_lens, s)?;
    if in_lens.len() != b || tg_lens.len() != b {
        candle_core::bail!("ctc_loss: {b} utterances but lengths for {}", in_lens.len());
    }
    let ids = targets.to_dtype(DType::U32)?.to_vec2::<u32>()?;
    let lp_host = log_probs
        .to_dtype(DType::F32)?
        .to_device(&candle_core::Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let mut losses = vec![0f32; b];
    let mut grad = vec![0f32; b * t * c];
    for i in 0..b {
        let (il, tl) = (in_lens[i].min(t), tg_lens[i].min(s));
        let labels = &ids[i][..tl];
        if let Some(bad) = labels.iter().find(|&&l| l as usize >= c) {
            candle_core::bail!("ctc_loss: target id {bad} of utterance {i} outside {c} classes");
        }
        if labels.iter().any(|&l| l as usize == blank_index) {
            candle_core::bail!(
                "ctc_loss: utterance {i} has the blank id {blank_index} as a target"
            );
        }
        let lp = &lp_host[i * t * c..(i + 1) * t * c];
        let g = &mut grad[i * t * c..(i + 1) * t * c];
        let nll = ctc_forward_backward(lp, c, il, labels, blank_index, g);
        // zero_infinity: impossible alignments contribute nothing.
        if nll.is_finite() {
            losses[i] = nll as f32;
        } else {
            g.fill(0.0);
        }
    }
    let op = CtcOp {
        losses,
        grad,
        shape: (b, t, c),
    };
    let per_utt = log_probs
        .to_device(&candle_core::Device::Cpu)?
        .to_dtype(DType::F32)?
        .apply_op1(op)?
        .to_device(log_probs.device())?
        .to_dtype(log_probs.dtype())?;
    let dev = log_probs.device();
    let tl = Tensor::from_vec(
        tg_lens.iter().map(|&l| l.max(1) as f32).collect::<Vec<_>>(),
        b,
        dev,
    )?
    .to_dtype(log_probs.dtype())?;
    match reduction {
        Reduction::Mean => (per_utt / tl)?.mean_all(),
        Reduction::BatchMean => per_utt.sum_all()? / b as f64,
        Reduction::Batch => per_utt / tl,
        Reduction::None => Ok(per_utt),
    }
}
