"""SepFormer parity fixtures: a small SepFormer in the official yaml's shape with seeded random
weights, saved as an SB-layout model directory (hyperparams.yaml + encoder/masknet/decoder.ckpt),
and SpeechBrain's `SepformerSeparation` outputs on real-speech (espeak-ng) mixtures at 8 kHz.

Also usable for the full official size (random weights; nothing is committed):
    python fixtures_separation.py --full OUT_DIR
writes OUT_DIR/model (the official yaml + random weights) and SB's output on a 5 s mixture.
"""

import os
import re
import shutil
import sys
import tempfile

import numpy as np
import soundfile as sf
import torch

from common import save_json, save_npy, speech

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OFFICIAL = os.path.join(ROOT, "..", "shared", "reference-models", "sepformer-wsj02mix", "hyperparams.yaml")

# The small configuration: the official file with smaller sizes (same classes and keys).
SMALL = {
    "out_channels: 256": "out_channels: 32",
    "in_channels: 256": "in_channels: 32",
    "num_layers: 8": "num_layers: 2",
    "d_model: 256": "d_model: 32",
    "nhead: 8": "nhead: 4",
    "d_ffn: 1024": "d_ffn: 64",
    "K: 250": "K: 10",
}


def small_yaml():
    with open(OFFICIAL) as f:
        text = f.read()
    for a, b in SMALL.items():
        assert a in text, a
        text = text.replace(a, b)
    return "# voxbrain parity fixture: the official sepformer-wsj02mix yaml with small sizes.\n" + text


def randomize(module, seed):
    """Seeded weights: default init for matrices, non-trivial norm weights and biases."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "prelu" in name:
                p.copy_(0.25 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel() if p.dim() > 1 else p.numel()
                p.copy_(torch.randn(p.shape, generator=g) / max(fan_in, 1) ** 0.5)


def write_model(model_dir, yaml_text, seed=0, keep_pe=True):
    from hyperpyyaml import load_hyperpyyaml

    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, "hyperparams.yaml"), "w") as f:
        f.write(yaml_text)
    hp = load_hyperpyyaml(yaml_text)
    for i, name in enumerate(["encoder", "masknet", "decoder"]):
        m = hp["modules"][name]
        randomize(m, seed + i)
        sd = m.state_dict()
        if not keep_pe:
            # The positional-encoding tables are buffers SB recomputes in __init__ and its
            # Pretrainer loads non-strictly; dropping them keeps the committed fixture small
            # (voxbrain fills missing `pos_enc.pe` the same way; the full-size run keeps them).
            sd = {k: v for k, v in sd.items() if not k.endswith("pos_enc.pe")}
        torch.save(sd, os.path.join(model_dir, f"{name}.ckpt"))


def load_sb(model_dir):
    from speechbrain.inference.separation import SepformerSeparation

    save = tempfile.mkdtemp(prefix="sepformer_sb_")
    model = SepformerSeparation.from_hparams(source=model_dir, savedir=save)
    model.eval()
    return model, save


def mixture(i, j, sr=8000, length=None, gain=0.7):
    """Two espeak utterances resampled to `sr`, cropped to the shorter (or `length`), added."""
    import torchaudio

    a, sa = speech(i)
    b, sb_ = speech(j)
    a = torchaudio.functional.resample(torch.tensor(a), sa, sr).numpy()
    b = torchaudio.functional.resample(torch.tensor(b), sb_, sr).numpy()
    n = min(len(a), len(b)) if length is None else length
    # Longer than the utterances: tile them (np.resize repeats the signal).
    a, b = np.resize(a, max(n, len(a))), np.resize(b, max(n, len(b)))
    return (a[:n] + gain * b[:n]).astype(np.float32)


def separation(out):
    out = os.path.join(out, "separation")
    model_dir = os.path.join(out, "model_small")
    torch.manual_seed(0)
    write_model(model_dir, small_yaml(), seed=0, keep_pe=False)
    model, save = load_sb(model_dir)
    manifest = {}
    # Lengths: not multiples of the stride (8) nor of the chunk (K=10 frames); one clip
    # shorter than a chunk; one mixture that is silent.
    cases = {
        "mix_a": mixture(0, 1, length=9_003),
        "mix_b": mixture(2, 3, length=4_001),
        "mix_short": mixture(1, 2)[3000:3077],
    }
    with torch.no_grad():
        for name, x in cases.items():
            y = model.separate_batch(torch.tensor(x).unsqueeze(0))[0].numpy()
            save_npy(os.path.join(out, f"{name}.npy"), x)
            save_npy(os.path.join(out, f"{name}_sources.npy"), y)
            manifest[name] = {"samples": int(len(x)), "out_shape": list(y.shape)}
        # separate_file on a 16 kHz file: SB resamples to 8 kHz and normalizes each source.
        x16 = mixture(0, 3, sr=16000, length=10_001)
        sf.write(os.path.join(out, "mix_16k.wav"), x16, 16000, subtype="FLOAT")
        y = model.separate_file(os.path.join(out, "mix_16k.wav"), savedir=save)[0].numpy()
        save_npy(os.path.join(out, "mix_16k_separate_file.npy"), y)
        manifest["mix_16k.wav"] = {"samples": int(len(x16)), "out_shape": list(y.shape)}
    save_json(os.path.join(out, "manifest.json"), manifest)
    shutil.rmtree(save, ignore_errors=True)


def full(out_dir, seconds=(5,)):
    """The official size with random weights; SB outputs for the full-size parity run."""
    torch.set_num_threads(2)
    with open(OFFICIAL) as f:
        text = f.read()
    model_dir = os.path.join(out_dir, "model")
    write_model(model_dir, text, seed=100)
    model, _ = load_sb(model_dir)
    x = mixture(0, 1, length=40_003)
    np.save(os.path.join(out_dir, "mix5s.npy"), x)
    with torch.no_grad():
        y = model.separate_batch(torch.tensor(x).unsqueeze(0))[0].numpy()
    np.save(os.path.join(out_dir, "mix5s_sources.npy"), y)
    print(f"full-size outputs written to {out_dir}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--full":
        full(sys.argv[2])
    else:
        print(__doc__)
