"""Joint CTC + attention parity fixtures: the loss of SpeechBrain's LibriSpeech CRDNN recipe
(`recipes/LibriSpeech/ASR/seq2seq/train.py`: `p_ctc = log_softmax(ctc_lin(enc))`,
`loss = ctc_weight * ctc_loss(p_ctc, tokens, wav_lens, tokens_lens) + (1 - ctc_weight) *
nll_loss(p_seq, tokens_eos, tokens_eos_lens, label_smoothing)`), which voxbrain's ASR recipe
trains with, on the small seeded ASR model of tests/fixtures/asr/model (dropout 0) and the
finetune fixtures' batch of three utterances, in train mode: both losses, the joint loss and
the gradient of every parameter of `asr_model` (enc, emb, dec, ctc_lin, seq_lin) after
`backward`.

Run: $VENV/bin/python data-tools/reference/make_fixtures.py joint_ctc
"""

import os
import shutil
import tempfile

import torch

from common import save_json, save_npy
from fixtures_finetune import (ASR_FIXTURES, LABEL_SMOOTHING, batch_summary, load_asr, make_dataset,
                               utterance_texts)

CTC_WEIGHT = 0.5


def joint_ctc(out):
    import speechbrain as sb
    from speechbrain.nnet.losses import ctc_loss, nll_loss

    out = os.path.join(out, "joint_ctc")
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    workdir = tempfile.mkdtemp(prefix="joint_ctc_sb_")
    try:
        asr = load_asr(os.path.join(ASR_FIXTURES, "model"), workdir)
        h = asr.hparams
        wavs = [os.path.join(ASR_FIXTURES, f"utt_{i}.wav") for i in range(3)]
        dataset = make_dataset(asr, wavs, utterance_texts())
        batch = sb.dataio.batch.PaddedBatch([dataset[i] for i in range(3)])
        h.asr_model.train()
        norm = asr.mods.encoder.normalize
        norm.train()
        for p in h.asr_model.parameters():
            p.requires_grad = True
        w, wav_lens = batch.signal
        feats = norm(asr.mods.encoder.compute_features(w), wav_lens)
        x = h.enc(feats)
        e_in = h.emb(batch.tokens_bos[0])
        dec_out, _ = h.dec(e_in, x, wav_lens)
        p_seq = h.log_softmax(h.seq_lin(dec_out))
        p_ctc = h.log_softmax(h.ctc_lin(x))
        tokens, tokens_lens = batch.tokens
        tokens_eos, tokens_eos_lens = batch.tokens_eos
        loss_ctc = ctc_loss(p_ctc, tokens, wav_lens, tokens_lens, h.blank_index)
        loss_seq = nll_loss(p_seq, tokens_eos, tokens_eos_lens, label_smoothing=LABEL_SMOOTHING)
        loss = CTC_WEIGHT * loss_ctc + (1 - CTC_WEIGHT) * loss_seq
        loss.backward()
        params, grads, offset = [], [], 0
        for k, p in h.asr_model.named_parameters():
            assert p.grad is not None, k
            params.append({"key": k, "offset": offset, "numel": p.numel(), "shape": list(p.shape)})
            grads.append(p.grad.detach().reshape(-1).float())
            offset += p.numel()
        save_npy(os.path.join(out, "grads.npy"), torch.cat(grads).numpy())
        manifest = dict(batch_summary(batch), ctc_weight=CTC_WEIGHT, label_smoothing=LABEL_SMOOTHING,
                        blank_index=int(h.blank_index), loss_ctc=float(loss_ctc), loss_seq=float(loss_seq),
                        loss=float(loss), params=params,
                        grad_norm_f64=float(torch.linalg.vector_norm(torch.cat(grads).double())),
                        speechbrain_version=sb.__version__, torch_version=torch.__version__.split("+")[0])
        save_json(os.path.join(out, "expected.json"), manifest)
        print(f"joint_ctc: ctc {float(loss_ctc):.6f} seq {float(loss_seq):.6f} joint {float(loss):.6f}, "
              f"{len(params)} parameter tensors")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
