#!/usr/bin/env python3
"""Times SpeechBrain on the same input voxbrain's benchmarks use; prints one JSON line.

    $VENV/bin/python data-tools/reference/bench_speechbrain.py fbank <wav> [--n-mels 80]
    $VENV/bin/python data-tools/reference/bench_speechbrain.py sepformer <model_dir> --seconds 5
    $VENV/bin/python data-tools/reference/bench_speechbrain.py asr <wav> --model-dir DIR --out o.json

torch runs with 2 threads (the CI machine's core count) so ratios are like for like.
"""

import argparse
import json
import time

import torch


def time_fn(fn, repeats, warmup=10):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return times[len(times) // 2]


def bench_ecapa(args):
    import resource
    import tempfile

    import numpy as np
    from speechbrain.inference.speaker import SpeakerRecognition

    with tempfile.TemporaryDirectory() as tmp:
        m = SpeakerRecognition.from_hparams(source=args.model_dir, savedir=tmp,
                                            overrides={"pretrained_path": args.model_dir})
    wav = m.load_audio(args.wav)
    with torch.no_grad():
        e = m.encode_batch(wav)
        if args.out:
            np.save(args.out, e[0, 0].numpy())
        b8 = wav.unsqueeze(0).repeat(8, 1)
        t1 = time_fn(lambda: m.encode_batch(wav), args.repeats, warmup=1)
        t8 = time_fn(lambda: m.encode_batch(b8), args.repeats, warmup=1)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"impl": "speechbrain", "what": "ecapa", "seconds": round(len(wav) / 16000, 2),
                      "batch1_ms": round(t1, 1), "batch8_ms": round(t8, 1), "peak_rss_mb": round(rss),
                      "torch_threads": args.threads}))


def bench_asr(args):
    """EncoderDecoderASR on one file: writes `--out` ({"tokens", "text", "enc_shape"}) and the
    encoder states beside it (.npy), times encode_batch and transcribe_batch (the yaml's
    decoding: beam search with its scorers; median of --repeats after one warm-up run)."""
    import os
    import resource
    import tempfile

    import numpy as np
    from speechbrain.inference.ASR import EncoderDecoderASR

    with tempfile.TemporaryDirectory() as tmp:
        m = EncoderDecoderASR.from_hparams(source=args.model_dir, savedir=tmp)
    m.eval()
    wav = m.load_audio(args.wav)
    wavs, lens = wav.unsqueeze(0), torch.tensor([1.0])
    with torch.no_grad():
        enc = m.encode_batch(wavs, lens)
        words, toks = m.transcribe_batch(wavs, lens)
        tokens = [int(t) for t in toks[0]]
        if args.out:
            np.save(os.path.splitext(args.out)[0] + ".npy", enc.numpy())
            with open(args.out, "w") as f:
                json.dump({"tokens": tokens, "text": words[0], "enc_shape": list(enc.shape)}, f)
        te = time_fn(lambda: m.encode_batch(wavs, lens), args.repeats, warmup=0)
        tt = time_fn(lambda: m.transcribe_batch(wavs, lens), args.repeats, warmup=0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"impl": "speechbrain", "what": "asr", "seconds": round(len(wav) / 16000, 2),
                      "encode_ms": round(te, 1), "transcribe_ms": round(tt, 1), "tokens": tokens,
                      "peak_rss_mb": round(rss), "torch_threads": args.threads}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["fbank", "ecapa", "sepformer", "asr"])
    ap.add_argument("wav", help="input wav (fbank, ecapa) or model directory (sepformer)")
    ap.add_argument("--model-dir", help="SB-layout model directory (ecapa, asr)")
    ap.add_argument("--out", help="ecapa: write the batch-1 embedding here (.npy); asr: the "
                    "tokens here (.json) and the encoder states beside it (.npy)")
    ap.add_argument("--seconds", type=float, default=5.0, help="sepformer: input length")
    ap.add_argument("--n-mels", type=int, default=80)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    if args.what == "ecapa":
        return bench_ecapa(args)
    if args.what == "asr":
        return bench_asr(args)
    if args.what == "sepformer":
        return sepformer(args)

    from speechbrain.dataio import audio_io
    from speechbrain.dataio.preprocess import AudioNormalizer
    from speechbrain.lobes.features import Fbank

    sig, sr = audio_io.load(args.wav, channels_first=False)
    wav = AudioNormalizer(16000)(sig, sr).unsqueeze(0)
    fb = Fbank(n_mels=args.n_mels)
    with torch.no_grad():
        ms = time_fn(lambda: fb(wav), args.repeats)
    print(json.dumps({"impl": "speechbrain", "what": "fbank", "n_mels": args.n_mels,
                      "seconds": round(wav.shape[1] / 16000, 2), "median_ms": round(ms, 4),
                      "torch_threads": args.threads}))


def sepformer(args):
    """SepformerSeparation.separate_batch on `--seconds` of the same synthetic mixture
    voxbrain's time_sepformer example uses; peak RSS from getrusage."""
    import math
    import resource
    import tempfile

    from speechbrain.inference.separation import SepformerSeparation

    model = SepformerSeparation.from_hparams(source=args.wav, savedir=tempfile.mkdtemp())
    model.eval()
    fs = model.hparams.sample_rate
    t = torch.arange(int(args.seconds * fs), dtype=torch.float32) / fs
    x = (0.3 * torch.sin(t * 2 * math.pi * 220 * (1 + 0.1 * torch.sin(t * 3)))
         + 0.2 * torch.sin(t * 2 * math.pi * 330) * torch.cos(t * 1.7)).unsqueeze(0)
    with torch.no_grad():
        ms = time_fn(lambda: model.separate_batch(x), args.repeats, warmup=1)
    print(json.dumps({"impl": "speechbrain", "what": "sepformer", "seconds": args.seconds,
                      "median_ms": round(ms, 2), "torch_threads": args.threads,
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


if __name__ == "__main__":
    main()
