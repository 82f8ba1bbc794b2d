"""SpeechBrain's separation training loss: `get_si_snr_with_pitwrapper` (PIT over `cal_si_snr`),
its value per utterance, the permutation it picks, and torch's gradient of the batch mean with
respect to the estimates. Inputs are seeded: speech-like sources (sums of sines with a decaying
envelope, plus noise) and estimates that are near them in order, near them swapped, partial
mixtures, and a 3-source case with a rotated order.

Also one SepFormer training step as SpeechBrain's separation recipe computes it (the small
seeded model of the `separation` fixtures in train mode, an espeak two-voice mixture at 8 kHz,
the decoder output cut or padded to the mixture length, the mean PIT loss, backward): the loss
and the gradient of every parameter.

Writes tests/fixtures/separation_train/si_snr_pit.json, sepformer_step.json (loss, parameter
names, shapes and offsets) and sepformer_step_{mix,sources,grads}.npy."""

import json
import os
from itertools import permutations

import numpy as np
import torch
from speechbrain.nnet.losses import PitWrapper, cal_si_snr, get_si_snr_with_pitwrapper


def _sources(g, b, t, c):
    n = torch.arange(t, dtype=torch.float32)
    out = torch.zeros(b, t, c)
    for i in range(b):
        for j in range(c):
            f = 0.01 + 0.05 * torch.rand(3, generator=g)
            amp = 0.2 + torch.rand(3, generator=g)
            env = torch.exp(-n / (50 + 400 * torch.rand(1, generator=g)))
            sig = sum(a * torch.sin(2 * torch.pi * fr * n + 6.0 * torch.rand(1, generator=g)) for a, fr in zip(amp, f))
            out[i, :, j] = sig * (0.3 + env) + 0.05 * torch.randn(t, generator=g)
    return out


def _case(g, b, t, c, perms, leak):
    src = _sources(g, b, t, c)
    est = torch.zeros_like(src)
    for i in range(b):
        p = perms[i]
        for j in range(c):
            other = src[i, :, (p[j] + 1) % c]
            est[i, :, j] = src[i, :, p[j]] + leak[i] * other + 0.1 * torch.randn(t, generator=g)
    # One estimate is scaled and shifted: SI-SNR ignores both.
    est[0] = 3.0 * est[0] + 0.5
    est = est.clone().requires_grad_(True)
    loss = get_si_snr_with_pitwrapper(src, est)
    loss.mean().backward()
    _, chosen = PitWrapper(cal_si_snr)(src, est.detach().clone())
    return {
        "shape": [b, t, c],
        "source": src.flatten().tolist(),
        "estimate": est.detach().flatten().tolist(),
        "loss": loss.detach().tolist(),
        "perms": [list(p) for p in chosen],
        "grad_mean": est.grad.flatten().tolist(),
    }


def separation_train(out_dir):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1234)
    cases = [
        _case(g, 3, 320, 2, [(0, 1), (1, 0), (0, 1)], [0.05, 0.1, 0.7]),
        _case(g, 2, 200, 3, [(1, 2, 0), (0, 2, 1)], [0.2, 0.5]),
    ]
    # SpeechBrain's own docstring example: x = arange(600).reshape(3, 100, 2), xhat swapped.
    x = torch.arange(600).reshape(3, 100, 2).float()
    doc = (-get_si_snr_with_pitwrapper(x, x[:, :, (1, 0)])).tolist()
    d = os.path.join(out_dir, "separation_train")
    os.makedirs(d, exist_ok=True)
    meta = {"speechbrain": __import__("speechbrain").__version__, "torch": torch.__version__,
            "function": "speechbrain.nnet.losses.get_si_snr_with_pitwrapper(source, estimate)",
            "cases": cases, "docstring_example_si_snr": doc}
    with open(os.path.join(d, "si_snr_pit.json"), "w") as f:
        json.dump(meta, f)
    print("losses", [c["loss"] for c in cases], "perms", [c["perms"] for c in cases], "doc", doc)
    sepformer_step(out_dir)


def sepformer_step(out_dir):
    import torchaudio

    from common import save_json, save_npy, speech
    from fixtures_separation import load_sb

    model, save = load_sb(os.path.join(out_dir, "separation", "model_small"))
    srcs = []
    for i, gain in [(0, 1.0), (1, 0.7)]:
        x, sr = speech(i)
        x = torchaudio.functional.resample(torch.tensor(x), sr, 8000)
        srcs.append(gain * x)
    # Not a multiple of the stride (8) nor of the chunk (K = 10 frames).
    n = min(min(len(x) for x in srcs), 6_003)
    targets = torch.stack([x[:n] for x in srcs], dim=-1).unsqueeze(0).float()  # [1, T, 2]
    mix = targets.sum(-1)  # [1, T]
    mods = model.mods
    mods.train()
    for p in mods.parameters():  # the inference interface freezes them
        p.requires_grad_(True)
    mix_w = mods.encoder(mix)
    est_mask = mods.masknet(mix_w)
    mix_w = torch.stack([mix_w] * 2)
    sep_h = mix_w * est_mask
    est = torch.cat([mods.decoder(sep_h[i]).unsqueeze(-1) for i in range(2)], dim=-1)
    t_est = est.size(1)
    est = torch.nn.functional.pad(est, (0, 0, 0, n - t_est)) if n > t_est else est[:, :n, :]
    loss = get_si_snr_with_pitwrapper(targets, est).mean()
    loss.backward()
    names, shapes, offsets, flat = [], [], [], []
    off = 0
    for module in ["encoder", "masknet", "decoder"]:
        for k, p in getattr(mods, module).named_parameters():
            names.append(f"{module}.{k}")
            shapes.append(list(p.shape))
            offsets.append(off)
            flat.append(p.grad.detach().flatten())
            off += p.numel()
    d = os.path.join(out_dir, "separation_train")
    save_npy(os.path.join(d, "sepformer_step_mix.npy"), mix[0].numpy())
    save_npy(os.path.join(d, "sepformer_step_sources.npy"), targets[0].numpy())
    save_npy(os.path.join(d, "sepformer_step_grads.npy"), torch.cat(flat).numpy().astype(np.float32))
    save_json(os.path.join(d, "sepformer_step.json"), {
        "speechbrain": __import__("speechbrain").__version__, "torch": torch.__version__,
        "model": "tests/fixtures/separation/model_small (train mode, dropout 0)",
        "loss": float(loss), "samples": n, "names": names, "shapes": shapes, "offsets": offsets})
    print("sepformer step: loss", float(loss), "params", off)
