"""Fine-tuning parity fixtures: one SGD step of the SpeechBrain tutorial's `EncDecFineTune`
("Pretrained Models and Fine-Tuning with HuggingFace", section "Fine-Tuning the ASR model") on
the small seeded ASR model of tests/fixtures/asr/model, run through SpeechBrain 1.1.2's own
Brain machinery (`Brain.fit` -> `_fit_train` -> `fit_batch` -> `optimizers_step`), plus
standalone `nll_loss` / `ctc_loss` cases.

What is recorded, in this order (see tests/fixtures/finetune/README.md):
  1. eval-mode loss (Stage.VALID, `modules.eval()`, `evaluate_batch`, no_grad) before any
     training forward: eval mode changes no state (no normalizer / BatchNorm update), so this
     is the loss of the loaded model;
  2. `brain.fit(range(1), ...)` on the one batch of the three utterances: the train-mode loss,
     the gradient of every enc/emb/dec/seq_lin parameter and their total L2 norm before
     clipping (captured inside `optimizers_step`, before SB's `clip_grad_norm_`), the norm that
     SB's `clip_grad_norm_` call returned, the normalizer's global statistics and the DNN
     BatchNorm running statistics after this (first) train forward, the parameters after the
     SGD step;
  3. a second train-mode forward on the same batch after the step (no_grad; the normalizer and
     BatchNorm statistics are updated a second time, as in training);
  4. an eval-mode loss at the end (statistics as left by 3).
A second fresh load repeats 2 by hand (compute_forward, compute_objectives, backward,
clip_grad_norm_, SGD step) and must agree with `fit` exactly.

`run_finetune` is shared with full_size_finetune.py (the official sizes, not committed).

Run: $VENV/bin/python data-tools/reference/make_fixtures.py finetune
"""

import os
import shutil
import tempfile

import numpy as np
import torch

from common import save_json, save_npy

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ASR_FIXTURES = os.path.join(ROOT, "tests", "fixtures", "asr")

# The tutorial uses SGD(lr=1e-5) (a real fine-tuning rate); 0.1 here so that one step moves the
# parameters and the loss by clearly more than float32 rounding noise.
LR = 0.1
MAX_GRAD_NORM = 5.0  # SpeechBrain's RunOptions default (--max_grad_norm)
LABEL_SMOOTHING = 0.1  # the tutorial's seq_cost
TRAINED = ("enc", "emb", "dec", "seq_lin")  # the modules the tutorial unfreezes


def utterance_texts():
    """The fixture utterances' texts as the tokenizer gets them: uppercase, no final period."""
    from fixtures_asr import UTTERANCES

    return [text.upper().rstrip(".") for _, text in UTTERANCES]


def _tutorial_brain_class():
    import speechbrain as sb

    # Exactly the tutorial's class (comments and the unused `ids` / `tokens` included).
    class EncDecFineTune(sb.Brain):

        def on_stage_start(self, stage, epoch):
            # enable grad for all modules we want to fine-tune
            if stage == sb.Stage.TRAIN:
                for module in [self.modules.enc, self.modules.emb, self.modules.dec, self.modules.seq_lin]:
                    for p in module.parameters():
                        p.requires_grad = True

        def compute_forward(self, batch, stage):
            """Forward computations from the waveform batches to the output probabilities."""
            batch = batch.to(self.device)
            wavs, wav_lens = batch.signal
            tokens_bos, _ = batch.tokens_bos
            wavs, wav_lens = wavs.to(self.device), wav_lens.to(self.device)

            # Forward pass
            feats = self.modules.compute_features(wavs)
            feats = self.modules.normalize(feats, wav_lens)
            #feats.requires_grad = True
            x = self.modules.enc(feats)

            e_in = self.modules.emb(tokens_bos)  # y_in bos + tokens
            h, _ = self.modules.dec(e_in, x, wav_lens)

            # Output layer for seq2seq log-probabilities
            logits = self.modules.seq_lin(h)
            p_seq = self.hparams.log_softmax(logits)

            return p_seq, wav_lens

        def compute_objectives(self, predictions, batch, stage):
            """Computes the loss (CTC+NLL) given predictions and targets."""

            p_seq, wav_lens = predictions

            ids = batch.id
            tokens_eos, tokens_eos_lens = batch.tokens_eos
            tokens, tokens_lens = batch.tokens

            loss = self.hparams.seq_cost(
                p_seq, tokens_eos, tokens_eos_lens)

            return loss

    return EncDecFineTune


def load_asr(model_dir, workdir):
    """EncoderDecoderASR from a copy of `model_dir`, dropout overridden to 0.0 (the yaml's
    `dropout` feeds both the CRDNN and the decoder's AttentionalRNNDecoder)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from speechbrain.inference.ASR import EncoderDecoderASR

    src = tempfile.mkdtemp(prefix="src_", dir=workdir)
    shutil.copytree(model_dir, src, dirs_exist_ok=True)
    save = tempfile.mkdtemp(prefix="save_", dir=workdir)
    asr = EncoderDecoderASR.from_hparams(source=src, savedir=save, overrides={"dropout": 0.0})
    drops = [m.p for m in asr.hparams.asr_model.modules() if isinstance(m, torch.nn.Dropout)]
    lstm_drops = [m.dropout for m in asr.hparams.asr_model.modules() if isinstance(m, torch.nn.RNNBase)]
    assert drops and all(p == 0.0 for p in drops), drops
    assert all(p == 0.0 for p in lstm_drops), lstm_drops
    assert asr.mods.encoder.model is asr.hparams.enc
    return asr


def make_brain(asr, lr, max_grad_norm):
    """The tutorial's modules / hparams / Brain, with SGD(lr) and run_opts device=cpu."""
    import speechbrain

    modules = {"enc": asr.mods.encoder.model,
               "emb": asr.hparams.emb,
               "dec": asr.hparams.dec,
               "compute_features": asr.mods.encoder.compute_features,  # we use the same features
               "normalize": asr.mods.encoder.normalize,
               "seq_lin": asr.hparams.seq_lin,
               }
    hparams = {"seq_cost": lambda x, y, z: speechbrain.nnet.losses.nll_loss(x, y, z, label_smoothing=LABEL_SMOOTHING),
               "log_softmax": speechbrain.nnet.activations.Softmax(apply_log=True)}
    run_opts = {"device": "cpu"}
    if max_grad_norm != MAX_GRAD_NORM:
        run_opts["max_grad_norm"] = max_grad_norm
    brain = _tutorial_brain_class()(modules, hparams=hparams, opt_class=lambda x: torch.optim.SGD(x, lr),
                                    run_opts=run_opts)
    brain.tokenizer = asr.tokenizer
    assert brain.max_grad_norm == max_grad_norm and brain.grad_accumulation_factor == 1
    assert brain.precision == "fp32" and not brain.skip_nonfinite_grads
    return brain


def make_dataset(asr, wav_paths, words):
    """The tutorial's DynamicItemDataset pipeline (read_audio + text_pipeline), utterances in
    the given order."""
    from speechbrain.dataio.dataset import DynamicItemDataset

    data = {f"utt_{i}": {"file_path": p, "words": w} for i, (p, w) in enumerate(zip(wav_paths, words))}
    dataset = DynamicItemDataset(data)
    add_tutorial_pipeline(dataset, asr)
    return dataset


def add_tutorial_pipeline(dataset, asr):
    """The tutorial's dynamic items on `dataset`: read_audio -> signal, and text_pipeline ->
    words, tokens_list, tokens_bos, tokens_eos, tokens; sets the output keys."""
    import speechbrain as sb

    dataset.add_dynamic_item(sb.dataio.dataio.read_audio, takes="file_path", provides="signal")

    @sb.utils.data_pipeline.takes("words")
    @sb.utils.data_pipeline.provides(
            "words", "tokens_list", "tokens_bos", "tokens_eos", "tokens")
    def text_pipeline(words):
        yield words
        tokens_list = asr.tokenizer.encode_as_ids(words)
        yield tokens_list
        tokens_bos = torch.LongTensor([asr.hparams.bos_index] + (tokens_list))
        yield tokens_bos
        tokens_eos = torch.LongTensor(tokens_list + [asr.hparams.eos_index])
        yield tokens_eos
        tokens = torch.LongTensor(tokens_list)
        yield tokens

    dataset.add_dynamic_item(text_pipeline)
    dataset.set_output_keys(["id", "signal", "words", "tokens_list", "tokens_bos", "tokens_eos", "tokens"])


LOADER_KWARGS = {"batch_size": 3, "shuffle": False}


def trained_params(asr, brain):
    """(state_dict key in asr.ckpt, parameter) for every parameter of enc, emb, dec, seq_lin,
    in asr_model.named_parameters() order (asr_model = [enc, emb, dec, ctc_lin, seq_lin])."""
    asr_model = asr.hparams.asr_model
    index = {}
    for name in TRAINED:
        hits = [i for i, m in enumerate(asr_model) if m is brain.modules[name]]
        assert len(hits) == 1, (name, hits)
        index[hits[0]] = name
    out = [(k, p) for k, p in asr_model.named_parameters() if int(k.split(".")[0]) in index]
    keys = set(asr_model.state_dict())
    assert all(k in keys for k, _ in out)
    assert sum(p.numel() for _, p in out) == sum(p.numel() for n in TRAINED for p in brain.modules[n].parameters())
    return out, index  # index: asr_model position -> module name


def bn_stats(asr):
    out = {}
    for name, m in asr.hparams.asr_model.named_modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            out[name] = {"running_mean": m.running_mean.tolist(), "running_var": m.running_var.tolist(),
                         "num_batches_tracked": int(m.num_batches_tracked), "momentum": m.momentum,
                         "eps": m.eps}
    return out


def normalizer_stats(brain):
    n = brain.modules.normalize
    return {"count": int(n.count), "glob_mean": n.glob_mean.tolist(), "glob_std": n.glob_std.tolist()}


def batch_summary(batch):
    wavs, wav_lens = batch.signal
    tb, tb_lens = batch.tokens_bos
    te, te_lens = batch.tokens_eos
    tl, tl_lens = batch.tokens
    return {
        "ids": list(batch.id), "words": list(batch.words),
        "tokens_list": [list(map(int, t)) for t in batch.tokens_list],
        "signal_shape": list(wavs.shape), "wav_lens": wav_lens.tolist(),
        "tokens_bos": tb.tolist(), "tokens_bos_lens": tb_lens.tolist(),
        "tokens_eos": te.tolist(), "tokens_eos_lens": te_lens.tolist(),
        "tokens": tl.tolist(), "tokens_lens": tl_lens.tolist(),
    }


def _flat(tensors):
    return torch.cat([t.detach().reshape(-1).float() for t in tensors]).numpy()


def run_finetune(model_dir, wav_paths, words, out_dir, lr=LR, max_grad_norm=MAX_GRAD_NORM,
                 cross_check=True, extra=None):
    """The fixture computation; writes grads.npy, params_after_step.npy, expected.json into
    `out_dir` and returns the manifest."""
    import speechbrain as sb

    torch.manual_seed(0)  # nothing here is random with dropout 0, but keep it fixed
    workdir = tempfile.mkdtemp(prefix="finetune_sb_")
    try:
        asr = load_asr(model_dir, workdir)
        brain = make_brain(asr, lr, max_grad_norm)
        dataset = make_dataset(asr, wav_paths, words)
        params, index = trained_params(asr, brain)
        norm_loaded = normalizer_stats(brain)

        # 1. eval-mode loss of the loaded model (SB's _fit_valid sequence, one batch).
        loader = brain.make_dataloader(dataset, stage=sb.Stage.VALID, ckpt_prefix=None, **LOADER_KWARGS)
        batches = list(loader)
        assert len(batches) == 1
        batch = batches[0]
        brain.on_stage_start(sb.Stage.VALID, 0)
        brain.modules.eval()
        with torch.no_grad():
            loss_eval = brain.evaluate_batch(batch, stage=sb.Stage.VALID)
        assert normalizer_stats(brain) == norm_loaded  # eval mode left the statistics alone

        # 2. SB's own training loop on the one batch, instrumented (instance attributes shadow
        # the methods that Brain._fit_train calls).
        rec = {}
        fit_batch, optimizers_step = brain.fit_batch, brain.optimizers_step
        clip = torch.nn.utils.clip_grad_norm_

        def recording_fit_batch(b):
            rec["batch"] = b
            rec["requires_grad"] = all(p.requires_grad for _, p in params)
            loss = fit_batch(b)
            rec["loss"] = loss
            rec["normalizer"] = normalizer_stats(brain)
            rec["bn"] = bn_stats(asr)
            return loss

        def recording_clip(parameters, max_norm, *args, **kwargs):
            parameters = list(parameters)
            total = clip(parameters, max_norm, *args, **kwargs)
            rec["clip_calls"] = rec.get("clip_calls", []) + [
                {"max_norm": float(max_norm), "returned_norm": float(total),
                 "n_params": len(parameters), "n_with_grad": sum(p.grad is not None for p in parameters)}]
            rec["grads_clipped_norm"] = float(torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(p.grad.double()) for p in parameters if p.grad is not None])))
            return total

        def recording_optimizers_step():
            rec["grads"] = [p.grad.detach().clone() if p.grad is not None else None for _, p in params]
            opt_params = brain.optimizer.param_groups[0]["params"]
            ids = {id(p) for _, p in params}
            rec["other_grads"] = [tuple(p.shape) for p in opt_params if p.grad is not None and id(p) not in ids]
            torch.nn.utils.clip_grad_norm_ = recording_clip
            try:
                optimizers_step()
            finally:
                torch.nn.utils.clip_grad_norm_ = clip

        brain.fit_batch = recording_fit_batch
        brain.optimizers_step = recording_optimizers_step
        brain.fit(range(1), train_set=dataset, progressbar=False, train_loader_kwargs=dict(LOADER_KWARGS))
        del brain.fit_batch, brain.optimizers_step
        assert brain.optimizer_step == 1 and rec["requires_grad"]
        assert isinstance(brain.optimizer, torch.optim.SGD) and brain.optimizer.defaults["lr"] == lr
        assert len(rec["clip_calls"]) == 1 and not rec["other_grads"], (rec["clip_calls"], rec["other_grads"])
        missing = [k for (k, _), g in zip(params, rec["grads"]) if g is None]
        assert not missing, f"parameters without a gradient: {missing}"
        same_batch(batch, rec["batch"])
        grads = rec["grads"]
        grad_norm_f64 = float(np.sqrt(sum(float(g.double().square().sum()) for g in grads)))
        grad_norm = rec["clip_calls"][0]["returned_norm"]
        params_after = [p.detach().clone() for _, p in params]

        # 3. second train-mode forward after the step (modules still in train mode after fit).
        assert all(brain.modules[n].training for n in brain.modules)
        with torch.no_grad(), brain.training_ctx:
            out = brain.compute_forward(batch, sb.Stage.TRAIN)
            loss_after = brain.compute_objectives(out, batch, sb.Stage.TRAIN)
        norm_after2 = normalizer_stats(brain)
        bn_after2 = bn_stats(asr)

        # 4. eval-mode loss at the end.
        brain.on_stage_start(sb.Stage.VALID, 1)
        brain.modules.eval()
        with torch.no_grad():
            loss_eval_end = brain.evaluate_batch(batch, stage=sb.Stage.VALID)

        manual = None
        if cross_check:
            manual = manual_step(model_dir, workdir, wav_paths, words, lr, max_grad_norm,
                                 float(rec["loss"]), grads, params_after)

        os.makedirs(out_dir, exist_ok=True)
        save_npy(os.path.join(out_dir, "grads.npy"), _flat(grads))
        save_npy(os.path.join(out_dir, "params_after_step.npy"), _flat(params_after))
        entries, offset = [], 0
        for (k, p), g in zip(params, grads):
            entries.append({"key": k, "shape": list(p.shape), "offset": offset, "numel": p.numel(),
                            "module": index[int(k.split(".")[0])],
                            "grad_norm": float(torch.linalg.vector_norm(g.double()))})
            offset += p.numel()
        s = batch_summary(batch)
        clip_coef = min(1.0, max_grad_norm / (grad_norm + 1e-6))
        manifest = {
            "speechbrain_version": sb.__version__,
            "torch_version": torch.__version__.split("+")[0],
            "lr": lr, "max_grad_norm": max_grad_norm, "label_smoothing": LABEL_SMOOTHING,
            "optimizer": "torch.optim.SGD(params, lr) (momentum 0, weight_decay 0)",
            "dropout_override": 0.0,
            "module_index": {v: k for k, v in index.items()},
            "words": s["words"], "ids": s["ids"], "tokens_list": s["tokens_list"],
            "wav_files": [os.path.relpath(p, out_dir) for p in wav_paths],
            "signal_shape": s["signal_shape"], "wav_lens": s["wav_lens"],
            "tokens_bos": s["tokens_bos"], "tokens_bos_lens": s["tokens_bos_lens"],
            "tokens_eos": s["tokens_eos"], "tokens_eos_lens": s["tokens_eos_lens"],
            "tokens": s["tokens"], "tokens_lens": s["tokens_lens"],
            "loss_eval": float(loss_eval),
            "loss": float(rec["loss"]),
            "grad_norm": grad_norm,
            "grad_norm_f64": grad_norm_f64,
            "clipped": grad_norm > max_grad_norm,
            "clip_coef": clip_coef,
            "grad_norm_after_clip": rec["grads_clipped_norm"],
            "loss_after_step": float(loss_after),
            "loss_eval_end": float(loss_eval_end),
            "n_params": offset,
            "params": entries,
            "grads_file": "grads.npy", "params_after_step_file": "params_after_step.npy",
            "normalizer_loaded": norm_loaded,
            "normalizer_after_first_forward": rec["normalizer"],
            "normalizer_after_second_forward": norm_after2,
            "bn_after_first_forward": rec["bn"],
            "bn_after_second_forward": bn_after2,
            "manual_cross_check": manual,
            "order": [
                "load (dropout 0.0); eval: on_stage_start(VALID), modules.eval(), evaluate_batch -> loss_eval",
                "brain.fit(range(1)): on_fit_start (SGD over brain.modules.parameters()), on_stage_start(TRAIN) "
                "(requires_grad on enc/emb/dec/seq_lin), modules.train(), zero_grad, fit_batch: compute_forward "
                "(normalizer + BatchNorm statistics update #1), compute_objectives -> loss, backward -> grads, "
                "grad_norm; optimizers_step: clip_grad_norm_(all params, max_grad_norm), SGD step -> params_after_step",
                "no_grad train-mode compute_forward + compute_objectives (statistics update #2) -> loss_after_step",
                "on_stage_start(VALID), modules.eval(), evaluate_batch -> loss_eval_end",
            ],
        }
        if extra:
            manifest.update(extra)
        save_json(os.path.join(out_dir, "expected.json"), manifest)
        return manifest
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def same_batch(a, b):
    for key in ("signal", "tokens_bos", "tokens_eos", "tokens"):
        (x, xl), (y, yl) = getattr(a, key), getattr(b, key)
        assert torch.equal(x, y) and torch.equal(xl, yl), key
    assert list(a.id) == list(b.id)


def manual_step(model_dir, workdir, wav_paths, words, lr, max_grad_norm, loss_fit, grads_fit, params_fit):
    """Step 2 by hand on a fresh load (no eval first): compute_forward, compute_objectives,
    backward, clip_grad_norm_, SGD step. Returns the largest differences from the fit() run."""
    import speechbrain as sb

    asr = load_asr(model_dir, workdir)
    brain = make_brain(asr, lr, max_grad_norm)
    dataset = make_dataset(asr, wav_paths, words)
    params, _ = trained_params(asr, brain)
    batch = next(iter(brain.make_dataloader(dataset, stage=sb.Stage.TRAIN, ckpt_prefix=None, **LOADER_KWARGS)))
    brain.init_optimizers()
    brain.on_stage_start(sb.Stage.TRAIN, 0)
    brain.modules.train()
    brain.zero_grad()
    outputs = brain.compute_forward(batch, sb.Stage.TRAIN)
    loss = brain.compute_objectives(outputs, batch, sb.Stage.TRAIN)
    loss.backward()
    grads = [p.grad.detach().clone() for _, p in params]
    norm = torch.nn.utils.clip_grad_norm_(brain.optimizer.param_groups[0]["params"], max_grad_norm)
    brain.optimizer.step()
    diff = {
        "loss": abs(float(loss.detach()) - loss_fit),
        "grads_max_abs": max(float((a - b).abs().max()) for a, b in zip(grads, grads_fit)),
        "params_after_max_abs": max(float((p.detach() - q).abs().max()) for (_, p), q in zip(params, params_fit)),
        "clip_returned_norm": float(norm),
    }
    assert diff["loss"] == 0.0 and diff["grads_max_abs"] == 0.0 and diff["params_after_max_abs"] == 0.0, diff
    return diff


# ----------------------------------------------------------------------------- losses

def loss_fixtures(out):
    """speechbrain.nnet.losses.nll_loss / ctc_loss on seeded random inputs."""
    from speechbrain.nnet.losses import ctc_loss, nll_loss

    torch.manual_seed(0)
    res = {}

    # (a) nll_loss on [B=3, L=7, C=11] log-probs, relative lengths [1, 5/7, 3/7].
    logits = torch.randn(3, 7, 11)
    logp = torch.log_softmax(logits, dim=-1)
    targets = torch.randint(0, 11, (3, 7))
    lengths = torch.tensor([1.0, 5 / 7, 3 / 7])
    save_npy(os.path.join(out, "nll_log_probs.npy"), logp.numpy())
    nll = {"log_probs": "nll_log_probs.npy", "shape": list(logp.shape), "targets": targets.tolist(),
           "lengths": lengths.tolist(), "cases": []}
    for ls in (0.0, 0.1):
        for red in ("mean", "batchmean", "batch"):
            v = nll_loss(logp, targets, lengths, label_smoothing=ls, reduction=red)
            nll["cases"].append({"label_smoothing": ls, "reduction": red,
                                 "value": v.tolist() if v.dim() else float(v)})
    x = logp.clone().requires_grad_(True)
    nll_loss(x, targets, lengths, label_smoothing=0.1, reduction="batchmean").backward()
    save_npy(os.path.join(out, "nll_grad_ls0.1_batchmean.npy"), x.grad.numpy())
    nll["grad"] = {"label_smoothing": 0.1, "reduction": "batchmean", "wrt": "log_probs",
                   "file": "nll_grad_ls0.1_batchmean.npy"}
    res["nll"] = nll

    # (b) ctc_loss on log_softmax of [B=3, T=12, C=6] logits, blank 0.
    logits = torch.randn(3, 12, 6)
    targets = torch.tensor([[1, 2, 2, 3], [4, 5, 0, 0], [3, 1, 5, 0]])  # a repeat in the first
    target_lens = torch.tensor([4, 2, 3]) / 4
    save_npy(os.path.join(out, "ctc_logits.npy"), logits.numpy())
    save_npy(os.path.join(out, "ctc_log_probs.npy"), torch.log_softmax(logits, dim=-1).numpy())
    ctc = {"logits": "ctc_logits.npy", "log_probs": "ctc_log_probs.npy",
           "log_probs_note": "log_softmax(logits, dim=-1); SB's ctc_loss gets these",
           "shape": list(logits.shape), "blank_index": 0, "targets": targets.tolist(),
           "target_lens": target_lens.tolist(), "cases": []}
    # "finite": every target fits; "infinite": the third utterance keeps round(12/6) = 2 frames
    # for 3 target tokens, so its CTC loss is inf and zero_infinity=True makes it 0 (and its
    # gradient 0).
    for name, input_lens in (("finite", [1.0, 0.75, 0.5]), ("infinite", [1.0, 0.75, 1 / 6])):
        input_lens = torch.tensor(input_lens)
        case = {"name": name, "input_lens": input_lens.tolist(),
                "input_frames": (input_lens * 12).round().int().tolist(),
                "target_tokens": (target_lens * 4).round().int().tolist()}
        for red in ("mean", "batch", "batchmean"):
            v = ctc_loss(torch.log_softmax(logits, -1), targets, input_lens, target_lens, 0, reduction=red)
            case[red] = v.tolist() if v.dim() else float(v)
        raw = torch.nn.functional.ctc_loss(torch.log_softmax(logits, -1).transpose(0, 1), targets,
                                           case["input_frames"], case["target_tokens"], 0,
                                           reduction="none", zero_infinity=False)
        case["per_utterance_without_zero_infinity"] = [float(t) if torch.isfinite(t) else str(float(t)) for t in raw]
        z = logits.clone().requires_grad_(True)
        ctc_loss(torch.log_softmax(z, -1), targets, input_lens, target_lens, 0, reduction="mean").backward()
        fname = f"ctc_grad_logits_mean_{name}.npy"
        save_npy(os.path.join(out, fname), z.grad.numpy())
        case["grad_mean_wrt_logits"] = fname
        ctc["cases"].append(case)
    res["ctc"] = ctc
    save_json(os.path.join(out, "losses.json"), res)
    return res


# ----------------------------------------------------------------------------- target

def finetune(out):
    import speechbrain

    out = os.path.join(out, "finetune")
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(out):  # start clean, but keep the hand-written README
        if name != "README.md":
            path = os.path.join(out, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    assert speechbrain.__version__ == "1.1.2", speechbrain.__version__
    wavs = [os.path.join(ASR_FIXTURES, f"utt_{i}.wav") for i in range(3)]
    m = run_finetune(os.path.join(ASR_FIXTURES, "model"), wavs, utterance_texts(), out,
                     extra={"model_dir": os.path.relpath(os.path.join(ASR_FIXTURES, "model"), out)})
    loss_fixtures(out)
    print(f"finetune: loss_eval {m['loss_eval']:.6f} loss {m['loss']:.6f} grad_norm {m['grad_norm']:.6f} "
          f"(clipped: {m['clipped']}, coef {m['clip_coef']:.6f}) loss_after_step {m['loss_after_step']:.6f} "
          f"loss_eval_end {m['loss_eval_end']:.6f}; {m['n_params']} parameters")
