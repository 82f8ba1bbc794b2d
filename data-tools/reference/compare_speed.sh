#!/usr/bin/env bash
# Times voxbrain and SpeechBrain on the same 10 s input in the same run and prints the ratio.
# Usage: data-tools/reference/compare_speed.sh [VENV_DIR]
# (VENV_DIR defaults to $VOXBRAIN_SB_VENV or ~/.cache/voxbrain-sbvenv; see setup_venv.sh;
#  SIMD=avx2 times the build without AVX-512 paths, see prologue.sh)
set -euo pipefail
source "$(dirname "$0")/prologue.sh" "$@"
# 10 s of speech: the three fixture utterances, tiled.
"$py" - "$root" "$tmp/ten_s.wav" <<'PY'
import sys, numpy as np, soundfile as sf
root, out = sys.argv[1], sys.argv[2]
x = np.concatenate([np.load(f"{root}/tests/fixtures/foundation/speech_{i}_16k.npy") for i in range(3)])
sf.write(out, np.resize(x, 160000), 16000, subtype="FLOAT")
PY
cd "$root"
cargo build --release "${cargo_flags[@]}" --example time_fbank -q
# Alternate the two implementations several times; report the median of the per-round ratios
# (this machine's timings drift, so one-shot ratios are noisy).
for n in 40 80; do
  rounds=()
  for r in 1 2 3 4 5; do
    vb=$("$bin_dir"/examples/time_fbank "$tmp/ten_s.wav" $n 100)
    sb=$("$py" data-tools/reference/bench_speechbrain.py fbank "$tmp/ten_s.wav" --n-mels $n --repeats 100 2>/dev/null)
    rounds+=("$vb|$sb")
  done
  "$py" - "${rounds[@]}" <<'PY'
import json, statistics, sys
pairs = [tuple(json.loads(x) for x in r.split("|")) for r in sys.argv[1:]]
ratios = [s["median_ms"] / v["median_ms"] for v, s in pairs]
vb = statistics.median(v["median_ms"] for v, _ in pairs)
sb = statistics.median(s["median_ms"] for _, s in pairs)
print(f"fbank n_mels={pairs[0][0]['n_mels']} on 10 s: voxbrain ({pairs[0][0].get('simd')} path) {vb:.3f} ms, SpeechBrain {sb:.3f} ms "
      f"(torch 2 threads); median ratio {statistics.median(ratios):.1f}x "
      f"(rounds: {', '.join(f'{r:.1f}' for r in ratios)})")
PY
done
