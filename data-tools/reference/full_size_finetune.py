#!/usr/bin/env python3
"""One-off full-size version of the `finetune` fixtures (not run in CI, output not committed).

Builds a seeded full-size SB-layout EncoderDecoderASR directory (fixtures_asr.write_model_dir
size="full": the official asr-crdnn-rnnlm-librispeech hyperparams.yaml byte for byte, the real
official normalizer.ckpt, a 1000-piece SentencePiece tokenizer, seeded weights with the small
fixture's weight tricks, BatchNorm statistics from the three fixture utterances), then runs
exactly the computation of fixtures_finetune.run_finetune (the tutorial's EncDecFineTune through
SpeechBrain's Brain.fit: eval loss, train loss, gradients, grad norm, clip, SGD step, second
train forward, final eval loss) on tests/fixtures/asr/utt_{0,1,2}.wav with the same texts.

Writes into OUT_DIR the same layout as tests/fixtures/finetune/ (expected.json, grads.npy,
params_after_step.npy; no loss fixtures) plus model/ (the model directory the numbers belong
to, ~700 MB; --model-dir reuses an existing one instead) and timing in expected.json.

Usage: $VENV/bin/python data-tools/reference/full_size_finetune.py OUT_DIR
           [--model-dir DIR] [--lr 0.1] [--max-grad-norm 5.0] [--cross-check] [--threads 2]
"""

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fixtures_finetune as ft  # noqa: E402

SEED = 1  # as full_size_asr.sh


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--model-dir", help="reuse this full-size model directory instead of building OUT_DIR/model")
    ap.add_argument("--lr", type=float, default=ft.LR)
    ap.add_argument("--max-grad-norm", type=float, default=ft.MAX_GRAD_NORM)
    ap.add_argument("--cross-check", action="store_true",
                    help="also repeat the step by hand on a second load (twice the time and memory)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = os.path.abspath(args.out_dir)
    os.makedirs(out, exist_ok=True)
    wavs = [os.path.join(ft.ASR_FIXTURES, f"utt_{i}.wav") for i in range(3)]

    t0 = time.time()
    if args.model_dir:
        model_dir = os.path.abspath(args.model_dir)
    else:
        from fixtures_asr import read_wav, write_model_dir

        model_dir = os.path.join(out, "model")
        write_model_dir(model_dir, [read_wav(p) for p in wavs], seed=SEED, size="full")
    t1 = time.time()
    m = ft.run_finetune(model_dir, wavs, ft.utterance_texts(), out, lr=args.lr,
                        max_grad_norm=args.max_grad_norm, cross_check=args.cross_check,
                        extra={"size": "full", "seed": SEED,
                               "model_dir": os.path.relpath(model_dir, out)})
    t2 = time.time()
    m["timing_s"] = {"build_model": round(t1 - t0, 1), "finetune": round(t2 - t1, 1),
                     "threads": args.threads}
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(m, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"full-size finetune: {m['n_params']} parameters; loss_eval {m['loss_eval']:.6f} loss {m['loss']:.6f} "
          f"grad_norm {m['grad_norm']:.6f} (clipped: {m['clipped']}) loss_after_step {m['loss_after_step']:.6f} "
          f"loss_eval_end {m['loss_eval_end']:.6f}; build {t1 - t0:.1f} s, finetune {t2 - t1:.1f} s -> {out}")


if __name__ == "__main__":
    main()
