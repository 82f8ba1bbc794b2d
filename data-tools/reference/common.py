"""Helpers shared by the parity fixture scripts: speech synthesis and .npy/.json output.

Real-speech inputs come from espeak-ng (several voices, speeds and pitches = several
"speakers"). If espeak-ng is missing, a deterministic formant-like signal generator is used
instead (see `synthetic_speech`). The generated wavs are committed with the fixtures, so tests
never need either tool.
"""

import json
import os
import shutil
import subprocess
import tempfile

import numpy as np
import soundfile as sf

SENTENCES = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
]

# (voice, words per minute, pitch 0-99): distinct "speakers".
VOICES = [
    ("en-us+m3", 160, 45),
    ("en-gb+f3", 150, 60),
    ("en-us+m7", 135, 30),
    ("en-gb-scotland+f2", 170, 55),
]


def espeak(text, voice, speed, pitch):
    """Synthesizes `text` with espeak-ng; returns (float32 samples, sample_rate)."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "x.wav")
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", path, text],
            check=True,
        )
        x, sr = sf.read(path, dtype="float32")
    return x, sr


def synthetic_speech(seed, seconds=3.0, sr=22050):
    """Deterministic speech-like signal: a glottal pulse train with a wandering pitch, shaped
    by three moving formant resonators, with syllable-rate amplitude modulation and pauses."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    f0 = 110 + 40 * rng.random() + 20 * np.sin(2 * np.pi * 0.7 * t + rng.random() * 6)
    phase = np.cumsum(f0 / sr)
    src = (np.diff(np.floor(phase), prepend=0) > 0).astype(np.float64)
    src += 0.02 * rng.standard_normal(n)
    y = np.zeros(n)
    for k, (base, spread) in enumerate([(500, 300), (1500, 600), (2500, 400)]):
        fc = base + spread * np.sin(2 * np.pi * (1.3 + k) * t + rng.random() * 6)
        r = 0.97
        a1 = -2 * r * np.cos(2 * np.pi * fc / sr)
        yk = np.zeros(n)
        for i in range(2, n):
            yk[i] = src[i] - a1[i] * yk[i - 1] - r * r * yk[i - 2]
        y += yk / (k + 1)
    env = np.clip(np.sin(2 * np.pi * 3.5 * t + rng.random() * 6), 0, None) ** 0.5
    y = y * env
    return (0.5 * y / np.abs(y).max()).astype(np.float32), sr


def speech(index, text=None):
    """Speech sample `index`: espeak-ng when available, else the synthetic generator."""
    voice, speed, pitch = VOICES[index % len(VOICES)]
    text = text or SENTENCES[index % len(SENTENCES)]
    if shutil.which("espeak-ng"):
        return espeak(text, voice, speed, pitch)
    return synthetic_speech(index)


def save_npy(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.save(path, np.ascontiguousarray(np.asarray(array, dtype=np.float32)))


def save_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.write("\n")
