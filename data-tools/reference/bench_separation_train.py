#!/usr/bin/env python3
"""Times ONE SepFormer training step in SpeechBrain (forward, PIT SI-SNR loss, backward) of the
model a separation recipe yaml describes, on the same synthetic batch as voxbrain's
`examples/time_separation_train.rs` (same signal formula, same shapes); prints one JSON line
with the same keys. The forward pass is SpeechBrain's WSJ0-2mix recipe's `compute_forward`
(Encoder, MaskNet, masks times the encoded mixture, Decoder per source, length fixed to the
mixture's); the loss is `get_si_snr_with_pitwrapper`, averaged. One warm-up round, then
--rounds timed ones; torch with --threads threads (2: the CI machine's cores).

    $VENV/bin/python data-tools/reference/bench_separation_train.py recipes/separation/hyperparams.yaml [--batch 4] [--seconds 2.5] [--rounds 5]
"""

import argparse
import json
import math
import resource
import statistics
import time

import numpy as np
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.nnet.losses import get_si_snr_with_pitwrapper


def voice(n, fs, f0, rate):
    """examples/time_separation_train.rs's `voice`, step for step in f32."""
    out = np.empty(n, dtype=np.float32)
    phase = np.float32(0.0)
    two_pi = np.float32(2.0 * math.pi)
    for i in range(n):
        t = np.float32(i) / np.float32(fs)
        phase = np.float32(phase + two_pi * np.float32(f0) * (np.float32(1.0) + np.float32(0.05) * np.sin(t * np.float32(1.3))) / np.float32(fs))
        env = (np.float32(0.5) + np.float32(0.5) * np.sin(t * np.float32(rate) * two_pi)) ** 2
        out[i] = env * sum(np.sin(phase * np.float32(h)) / np.float32(h) for h in range(1, 6))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("yaml")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=2.5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1234)
    with open(args.yaml) as f:
        hp = load_hyperpyyaml(f)
    enc, masknet, dec = hp["Encoder"], hp["MaskNet"], hp["Decoder"]
    for m in (enc, masknet, dec):
        m.train()
    fs = hp["sample_rate"]
    n = int(args.seconds * fs)
    mix, src = [], []
    for b in range(args.batch):
        s1 = voice(n, fs, 110.0 + 10.0 * b, 3.0)
        s2 = voice(n, fs, 210.0 + 15.0 * b, 4.1)
        mix.append(s1 + s2)
        src.append(np.stack([s1, s2], axis=-1))
    mix = torch.from_numpy(np.stack(mix))
    targets = torch.from_numpy(np.stack(src))
    num_spks = hp["num_spks"]

    def step():
        params = [p for m in (enc, masknet, dec) for p in m.parameters()]
        for p in params:
            p.grad = None
        t0 = time.perf_counter()
        mix_w = enc(mix)
        est_mask = masknet(mix_w)
        mix_w = torch.stack([mix_w] * num_spks)
        sep_h = mix_w * est_mask
        est = torch.cat([dec(sep_h[i]).unsqueeze(-1) for i in range(num_spks)], dim=-1)
        t_origin, t_est = mix.size(1), est.size(1)
        if t_origin > t_est:
            est = torch.nn.functional.pad(est, (0, 0, 0, t_origin - t_est))
        else:
            est = est[:, :t_origin, :]
        loss = get_si_snr_with_pitwrapper(targets, est).mean()
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        return (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t2 - t0) * 1e3, loss.item()

    step()  # warm-up
    fwd, bwd, tot = [], [], []
    for _ in range(args.rounds):
        f, b, t, loss = step()
        fwd.append(f)
        bwd.append(b)
        tot.append(t)
    print(json.dumps({
        "impl": "speechbrain", "what": "separation_train_step", "batch": args.batch,
        "seconds": args.seconds, "forward_ms": round(statistics.median(fwd), 2),
        "backward_ms": round(statistics.median(bwd), 2), "median_ms": round(statistics.median(tot), 2),
        "loss": loss, "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "threads": args.threads,
    }))


if __name__ == "__main__":
    main()
