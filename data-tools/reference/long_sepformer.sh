#!/usr/bin/env bash
# One-off long-input check of SepFormer at the official size (random weights; nothing committed):
#  1. memory and time of whole-file separation at 5 s, 20 s and 60 s (one process each, so peak
#     RSS is per length) with `voxbrain separate`;
#  2. seam quality: the 60 s mixture separated in 10 s windows with 2 s overlap
#     (`--chunk-seconds 10`) against the whole-file output, SI-SNR per source after matching;
#  3. a 10-minute mixture separated in windows: wall time and peak RSS (bounded memory).
# Mixtures: two streams of espeak-ng sentences (different voices, 0.2-1.0 s pauses) at 8 kHz,
# the second at gain 0.7, added.
# Usage: [KEEP=dir] data-tools/reference/long_sepformer.sh [VENV_DIR]
set -euo pipefail
source "$(dirname "$0")/prologue.sh" "$@"
[ -f "$tmp/model/masknet.ckpt" ] || "$py" data-tools/reference/fixtures_separation.py --full "$tmp"
[ -f "$tmp/mix_600.wav" ] || "$py" - "$tmp" <<'PY'
import os, random, sys
import numpy as np, soundfile as sf, torch, torchaudio
sys.path.insert(0, "data-tools/reference")
from common import SENTENCES, VOICES, espeak

out = sys.argv[1]
rng = random.Random(0)

def stream(n, voices):
    parts, total = [], 0
    while total < n:
        voice, speed, pitch = rng.choice(voices)
        x, sr = espeak(rng.choice(SENTENCES), voice, speed, pitch)
        x = torchaudio.functional.resample(torch.from_numpy(x), sr, 8000).numpy()
        x = 0.5 * x / max(1e-9, float(np.abs(x).max()))
        pause = np.zeros(int(rng.uniform(0.2, 1.0) * 8000), np.float32)
        parts += [x.astype(np.float32), pause]
        total += len(x) + len(pause)
    return np.concatenate(parts)[:n]

n = 600 * 8000
a, b = stream(n, VOICES[::2]), stream(n, VOICES[1::2])
mix = (a + 0.7 * b).astype(np.float32)
for s in (5, 20, 60, 600):
    sf.write(os.path.join(out, f"mix_{s}.wav"), mix[: s * 8000], 8000, subtype="FLOAT")
PY
cargo build --release "${cargo_flags[@]}" -q
vb="$bin_dir"/voxbrain
run() {  # run <name> <args...>: prints "<name> <wall s> <peak RSS MB>"
  local name=$1; shift
  /usr/bin/time -f "%e %M" -o "$tmp/time_$name" "$vb" separate --source "$tmp/model" \
    --savedir "$tmp/save" --out-dir "$tmp/out_$name" "$@" >/dev/null 2>"$tmp/log_$name" \
    || { cat "$tmp/log_$name"; exit 1; }
  read -r wall rss <"$tmp/time_$name"
  echo "$name $wall $((rss / 1024))"
}
for s in 5 20 60; do run "whole_$s" --out-npy "$tmp/whole_$s.npy" "$tmp/mix_$s.wav"; done
run chunked_60 --chunk-seconds 10 --overlap-seconds 2 --out-npy "$tmp/chunked_60.npy" "$tmp/mix_60.wav"
run chunked_600 --chunk-seconds 10 --overlap-seconds 2 --out-npy "$tmp/chunked_600.npy" "$tmp/mix_600.wav"
"$py" - "$tmp" <<'PY'
import itertools, sys
import numpy as np
d = sys.argv[1]

def si_snr(est, ref):
    est, ref = est - est.mean(), ref - ref.mean()
    proj = (est @ ref) / max(ref @ ref, 1e-12) * ref
    return 10 * np.log10(max(proj @ proj, 1e-20) / max((est - proj) @ (est - proj), 1e-20))

w, c = np.load(f"{d}/whole_60.npy"), np.load(f"{d}/chunked_60.npy")
n = w.shape[1]
best = max(itertools.permutations(range(n)),
           key=lambda p: sum(si_snr(c[:, p[i]], w[:, i]) for i in range(n)))
vals = [si_snr(c[:, best[i]], w[:, i]) for i in range(n)]
print("seam, 60 s, 10 s windows / 2 s overlap vs whole file: SI-SNR "
      + ", ".join(f"{v:.1f} dB" for v in vals) + f" (sources, permutation {best})")
x = np.load(f"{d}/chunked_600.npy")
print(f"10-minute output: {x.shape}, finite: {bool(np.isfinite(x).all())}")
PY
