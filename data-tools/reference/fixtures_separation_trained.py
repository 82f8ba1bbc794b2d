"""Fixtures for voxbrain's bundled separation model (models/sepformer-voxbrain-synth), trained
by voxbrain's own recipe: SpeechBrain 1.1.2's `SepformerSeparation.from_hparams` loads the
folder as it is and separates held-out mixtures (test voices and sentences the recipe never
trained on, copied into tests/fixtures/separation_trained/ by the recipe's bundling step) and
the tour's real two-speaker mixture; the Rust test compares voxbrain's output with these.
"""

import json
import os
import tempfile

import numpy as np
import soundfile as sf
import torch
from speechbrain.inference.separation import SepformerSeparation

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def si_snr(est, ref):
    est = est - est.mean()
    ref = ref - ref.mean()
    proj = (est @ ref) / max(ref @ ref, 1e-12) * ref
    noise = est - proj
    return 10 * np.log10(max(proj @ proj, 1e-12) / max(noise @ noise, 1e-12))


def separation_trained(out_dir):
    d = os.path.join(out_dir, "separation_trained")
    model = SepformerSeparation.from_hparams(
        source=os.path.join(ROOT, "models", "sepformer-voxbrain-synth"), savedir=tempfile.mkdtemp()
    )
    summary = {}
    for name in sorted(os.listdir(d)):
        if not name.endswith("_mix.wav"):
            continue
        stem = name[: -len("_mix.wav")]
        mix, sr = sf.read(os.path.join(d, name), dtype="float32")
        with torch.no_grad():
            est = model.separate_batch(torch.tensor(mix).unsqueeze(0))[0].numpy()  # [T, 2]
        np.save(os.path.join(d, f"{stem}_speechbrain.npy"), est.astype(np.float32))
        entry = {"samples": int(len(mix)), "sample_rate": int(sr)}
        src = [os.path.join(d, f"{stem}_s{i}.wav") for i in (1, 2)]
        if all(os.path.exists(p) for p in src):
            refs = [sf.read(p, dtype="float32")[0] for p in src]
            n = min(len(mix), est.shape[0])
            best = max(
                (si_snr(est[:n, 0], refs[a][:n]) + si_snr(est[:n, 1], refs[1 - a][:n])) / 2
                for a in (0, 1)
            )
            base = (si_snr(mix[:n], refs[0][:n]) + si_snr(mix[:n], refs[1][:n])) / 2
            entry["si_snri_db"] = float(best - base)
        summary[stem] = entry
        print(stem, entry)
    with open(os.path.join(d, "speechbrain.json"), "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
