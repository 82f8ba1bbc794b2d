"""SI-SNR improvement of a separation model folder on mixtures of the bundled REAL recordings.

Usage: python separation_real_mixtures.py [MODEL_DIR]   (default models/sepformer-voxbrain-synth)

For the model cards: SpeechBrain 1.1.2's `SepformerSeparation.from_hparams` loads the folder as
it is; the first recording of each of the three speakers of tests/fixtures/real_speech
(LibriVox reader, JFK, CMU Sphinx speaker) are paired, each pair mixed as the tutorial (and
`voxbrain tour`) mixes: resampled to the model's rate, cropped to the shorter, added. Prints
the permutation-invariant SI-SNR improvement of each pair and their mean.
"""

import json
import os
import sys
import tempfile

import numpy as np
import soundfile as sf
import torch
import torchaudio
from speechbrain.inference.separation import SepformerSeparation

from fixtures_separation_trained import si_snr

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
REAL = os.path.join(ROOT, "tests", "fixtures", "real_speech")


def load(path, sr):
    x, file_sr = sf.read(path, dtype="float32", always_2d=True)
    x = torch.tensor(x.mean(axis=1))
    if file_sr != sr:
        x = torchaudio.functional.resample(x, file_sr, sr)
    return x.numpy()


def main():
    model_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "models", "sepformer-voxbrain-synth")
    model = SepformerSeparation.from_hparams(source=os.path.abspath(model_dir), savedir=tempfile.mkdtemp())
    sr = model.hparams.sample_rate
    with open(os.path.join(REAL, "manifest.json")) as f:
        manifest = json.load(f)
    first = {}
    for uid in sorted(manifest):
        first.setdefault(manifest[uid]["spkID"], uid)
    speakers = sorted(first)
    scores = []
    for i in range(len(speakers)):
        for j in range(i + 1, len(speakers)):
            a, b = first[speakers[i]], first[speakers[j]]
            s1, s2 = load(os.path.join(REAL, a + ".wav"), sr), load(os.path.join(REAL, b + ".wav"), sr)
            n = min(len(s1), len(s2))
            s1, s2 = s1[:n], s2[:n]
            mix = s1 + s2
            with torch.no_grad():
                est = model.separate_batch(torch.tensor(mix).unsqueeze(0))[0].numpy()
            m = min(n, est.shape[0])
            best = max(
                (si_snr(est[:m, 0], [s1, s2][p][:m]) + si_snr(est[:m, 1], [s2, s1][p][:m])) / 2 for p in (0, 1)
            )
            base = (si_snr(mix[:m], s1[:m]) + si_snr(mix[:m], s2[:m])) / 2
            scores.append(best - base)
            print(f"{a} + {b}: SI-SNRi {best - base:.2f} dB")
    print(f"mean SI-SNRi {np.mean(scores):.2f} dB over {len(scores)} real mixtures")


if __name__ == "__main__":
    main()
