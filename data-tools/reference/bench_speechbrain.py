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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["fbank", "ecapa"])
    ap.add_argument("wav")
    ap.add_argument("--model-dir", help="SB-layout model directory (ecapa)")
    ap.add_argument("--out", help="write the batch-1 embedding here (.npy)")
    ap.add_argument("--n-mels", type=int, default=80)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    if args.what == "ecapa":
        return bench_ecapa(args)

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
