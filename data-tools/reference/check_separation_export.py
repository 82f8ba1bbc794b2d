#!/usr/bin/env python3
"""Harness check: a SepFormer trained and exported by voxbrain (brain::separation::Separation::
export, SpeechBrain's layout) loads in SpeechBrain's own `SepformerSeparation.from_hparams` and
separates a mixture as voxbrain does.

    VOXBRAIN_KEEP_SEPARATION_EXPORT=/tmp/sepexport cargo test --test separation_train
    $VENV/bin/python data-tools/reference/check_separation_export.py /tmp/sepexport
"""

import os
import sys
import tempfile

import numpy as np
import torch
from speechbrain.inference.separation import SepformerSeparation


def main(d):
    torch.set_num_threads(2)
    model = SepformerSeparation.from_hparams(source=os.path.join(d, "model"), savedir=tempfile.mkdtemp())
    mix = torch.tensor(np.load(os.path.join(d, "mix.npy"))).unsqueeze(0)
    want = np.load(os.path.join(d, "voxbrain_sources.npy"))
    with torch.no_grad():
        got = model.separate_batch(mix)[0].numpy()
    assert got.shape == want.shape[1:] or got.shape == want.shape, (got.shape, want.shape)
    got = got.reshape(want.shape)
    err = np.abs(got - want).max()
    snr = 10 * np.log10((want ** 2).sum() / max(((got - want) ** 2).sum(), 1e-30))
    print(f"SpeechBrain vs voxbrain on the exported model: max abs error {err:.2e}, SNR {snr:.1f} dB")
    assert snr > 100, snr


if __name__ == "__main__":
    main(sys.argv[1])
