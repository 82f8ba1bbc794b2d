#!/usr/bin/env python3
"""Times ONE fine-tuning step of the SpeechBrain tutorial's `EncDecFineTune` ("Pretrained
Models and Fine-Tuning with HuggingFace", "Fine-Tuning the ASR model") at the official
asr-crdnn-rnnlm-librispeech size; prints one JSON line. voxbrain's side is
`examples/time_finetune.rs`; compare_finetune_speed.sh runs both.

    $VENV/bin/python data-tools/reference/bench_finetune.py --prepare OUT_DIR [--threads 2]
    $VENV/bin/python data-tools/reference/bench_finetune.py MODEL_DIR MANIFEST [--rounds 5] [--threads 2]

--prepare writes into OUT_DIR (keeping what is already there):
  * model/: the seeded full-size SB-layout model dir exactly as full_size_finetune.py builds it
    (fixtures_asr.write_model_dir(size="full", seed=full_size_finetune.SEED), BatchNorm
    statistics from tests/fixtures/asr/utt_{0,1,2}.wav; the official yaml byte for byte, the
    official normalizer.ckpt, a 1000-piece tokenizer; ~700 MB, a minute or two to build);
  * utt_0.wav .. utt_7.wav: eight different sentences, ~2.8-3.2 s each, espeak-ng with eight
    voices, resampled to 16 kHz, peak 0.9, 16-bit PCM;
  * manifest.json in the tutorial's format {id: {"file_path" (absolute), "words" (uppercase,
    no punctuation), "spkID", "length" (seconds)}}.
It prints the MODEL_DIR and MANIFEST paths as one JSON line.

The timed step is what `Brain.fit` runs per batch: the tutorial's pipeline
(`DynamicItemDataset.from_json(MANIFEST).filtered_sorted(sort_key="length")`, `read_audio`,
`text_pipeline`; the loader as its `fit` call: batch_size 8, shuffle False) gives one
PaddedBatch of all 8 utterances (shortest first); the model is loaded with dropout overridden to
0.0, SGD(lr=1e-5), nll_loss with label_smoothing 0.1, max_grad_norm 5.0 (SB's default), fp32,
device cpu. `on_fit_start` + `on_stage_start(TRAIN)` + `modules.train()` + `zero_grad()` as
`fit` / `_fit_train` do, then 1 warm-up and --rounds timed calls of `brain.fit_batch(batch)`
(compute_forward in train mode: Fbank, normalizer statistics update, CRDNN with BatchNorm
updates, embedding, attentional GRU decoder, seq_lin, log-softmax; compute_objectives;
backward; clip_grad_norm_ over all parameters; SGD step; zero_grad). The batch is loaded once
before timing (audio reading is not timed). peak_rss_mb is ru_maxrss for the whole process,
model load included (EncoderDecoderASR.from_hparams loads the RNNLM as well);
load_peak_rss_mb is the same taken just before the warm-up step.
"""

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402  (found through the path above)

BATCH = 8
LR = 1e-5  # the tutorial's SGD rate
SAMPLE_RATE = 16000

# Eight different sentences (Harvard lists) and eight "speakers" (espeak-ng voice+variant,
# pitch 0-99); the speed (words per minute) is tuned per utterance to hit its target length.
SENTENCES = common.SENTENCES + [
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
]
VOICES = [
    ("en-us+m3", 45), ("en-gb+f3", 60), ("en-us+m7", 30), ("en-gb-scotland+f2", 55),
    ("en-us+f4", 70), ("en-gb+m1", 40), ("en-gb-x-rp+m5", 50), ("en-029+f1", 65),
]


def words_of(text):
    """The tutorial's `words`: uppercase, punctuation removed."""
    return " ".join(re.sub(r"[^A-Z ]", "", text.upper()).split())


def synthesize(text, voice, pitch, target_s):
    """espeak-ng at 16 kHz (peak 0.9), the speed adjusted until the length is within 0.1 s of
    `target_s`."""
    import numpy as np
    import torchaudio
    from common import espeak

    speed, y = 150, None
    for _ in range(6):
        x, sr = espeak(text, voice, speed, pitch)
        y = torchaudio.functional.resample(torch.from_numpy(x), sr, SAMPLE_RATE).numpy()
        y = (0.9 * y / max(1e-9, float(np.abs(y).max()))).astype(np.float32)
        d = len(y) / SAMPLE_RATE
        if abs(d - target_s) <= 0.1:
            break
        speed = int(round(min(450, max(80, speed * d / target_s))))
    assert 2.6 <= len(y) / SAMPLE_RATE <= 3.4, (text, voice, len(y) / SAMPLE_RATE)
    return y


def prepare(out):
    """Writes OUT/model (if missing), OUT/utt_{0..7}.wav and OUT/manifest.json."""
    import soundfile as sf

    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    model_dir = os.path.join(out, "model")
    t0 = time.time()
    if not all(os.path.isfile(os.path.join(model_dir, f)) for f in
               ("hyperparams.yaml", "asr.ckpt", "lm.ckpt", "normalizer.ckpt", "tokenizer.ckpt")):
        # Exactly full_size_finetune.py's model directory.
        import fixtures_finetune as ft
        from fixtures_asr import read_wav, write_model_dir
        from full_size_finetune import SEED

        wavs = [read_wav(os.path.join(ft.ASR_FIXTURES, f"utt_{i}.wav")) for i in range(3)]
        write_model_dir(model_dir, wavs, seed=SEED, size="full")
    t1 = time.time()

    manifest = {}
    for i, (text, (voice, pitch)) in enumerate(zip(SENTENCES, VOICES)):
        target = 2.8 + 0.4 * ((i * 3) % BATCH) / (BATCH - 1)  # 2.8-3.2 s, not in file order
        path = os.path.join(out, f"utt_{i}.wav")
        sf.write(path, synthesize(text, voice, pitch, target), SAMPLE_RATE, subtype="PCM_16")
        n = sf.info(path).frames
        manifest[f"utt_{i}"] = {"file_path": path, "words": words_of(text),
                                "spkID": f"speaker_{voice}", "length": round(n / SAMPLE_RATE, 4)}
    path = os.path.join(out, "manifest.json")
    with open(path, "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    print(json.dumps({"model_dir": model_dir, "manifest": path,
                      "audio_seconds": round(sum(v["length"] for v in manifest.values()), 3),
                      "build_model_s": round(t1 - t0, 1)}))


def make_dataset(asr, manifest):
    """The tutorial's data pipeline on MANIFEST (fixtures_finetune's, sorted by length)."""
    from speechbrain.dataio.dataset import DynamicItemDataset

    import fixtures_finetune as ft

    dataset = DynamicItemDataset.from_json(manifest)
    dataset = dataset.filtered_sorted(sort_key="length")
    ft.add_tutorial_pipeline(dataset, asr)
    return dataset


def bench(args):
    import speechbrain as sb

    import fixtures_finetune as ft

    torch.manual_seed(0)
    with open(args.manifest) as f:
        lengths = {k: float(v["length"]) for k, v in json.load(f).items()}
    audio_seconds = sum(lengths.values())
    workdir = tempfile.mkdtemp(prefix="bench_finetune_")
    try:
        asr = ft.load_asr(args.model_dir, workdir)  # a copy of MODEL_DIR, dropout 0.0
        brain = ft.make_brain(asr, LR, ft.MAX_GRAD_NORM)
        assert ft.LABEL_SMOOTHING == 0.1 and brain.max_grad_norm == 5.0
        dataset = make_dataset(asr, args.manifest)
        loader = brain.make_dataloader(dataset, stage=sb.Stage.TRAIN, ckpt_prefix=None,
                                       batch_size=BATCH, shuffle=False)
        batches = list(loader)
        assert len(batches) == 1 and len(batches[0].id) == BATCH, [len(b.id) for b in batches]
        batch = batches[0]
        wavs, wav_lens = batch.signal
        assert list(batch.id) == sorted(lengths, key=lambda k: lengths[k]), list(batch.id)
        assert abs(wavs.shape[1] / SAMPLE_RATE - max(lengths.values())) < 1e-3

        # What fit() / _fit_train() do before the first batch.
        brain.on_fit_start()
        brain.on_stage_start(sb.Stage.TRAIN, 1)
        brain.modules.train()
        brain.zero_grad()
        n_params = sum(p.numel() for n in ft.TRAINED for p in brain.modules[n].parameters())
        assert all(p.requires_grad for n in ft.TRAINED for p in brain.modules[n].parameters())
        load_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        def step():
            brain.step += 1
            return float(brain.fit_batch(batch))

        losses = [step()]  # warm-up
        times = []
        for _ in range(args.rounds):
            t = time.perf_counter()
            losses.append(step())
            times.append((time.perf_counter() - t) * 1e3)
        assert brain.optimizer_step == args.rounds + 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"impl": "speechbrain", "what": "finetune_step", "batch": BATCH,
                      "audio_seconds": round(audio_seconds, 3), "step_ms": [round(t, 1) for t in times],
                      "median_ms": round(statistics.median(times), 1), "peak_rss_mb": round(rss),
                      "load_peak_rss_mb": round(load_rss), "signal_shape": list(wavs.shape),
                      "tokens_eos_shape": list(batch.tokens_eos[0].shape), "trained_params": n_params,
                      "losses": [round(x, 5) for x in losses], "torch_threads": args.threads}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", nargs="?", help="full-size SB-layout model directory")
    ap.add_argument("manifest", nargs="?", help="tutorial-format JSON manifest of the 8 utterances")
    ap.add_argument("--prepare", metavar="OUT_DIR", help="write the model dir, wavs and manifest here")
    ap.add_argument("--rounds", type=int, default=5, help="timed steps (after one warm-up step)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.prepare:
        return prepare(args.prepare)
    if not (args.model_dir and args.manifest):
        ap.error("MODEL_DIR and MANIFEST are required (or --prepare OUT_DIR)")
    bench(args)


if __name__ == "__main__":
    main()
