#!/usr/bin/env python3
"""Times SpeechBrain on the same input voxbrain's benchmarks use; prints one JSON line.

    $VENV/bin/python data-tools/reference/bench_speechbrain.py fbank <wav> [--n-mels 80]

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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["fbank"])
    ap.add_argument("wav")
    ap.add_argument("--n-mels", type=int, default=80)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

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


if __name__ == "__main__":
    main()
