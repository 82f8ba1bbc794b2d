#!/usr/bin/env bash
# One-off full-size check (official ECAPA config, channels 1024/3072): builds a seeded
# full-size SB-layout model in a temp dir, runs SpeechBrain and voxbrain on the same 10 s
# input, compares the embeddings and reports speed (batch 1 and 8) and peak RSS.
# Usage: [KEEP=dir] data-tools/reference/full_size_ecapa.sh [VENV_DIR]
set -euo pipefail
source "$(dirname "$0")/prologue.sh" "$@"
"$py" - "$tmp" <<'PY'
import sys, os, numpy as np, soundfile as sf
sys.path.insert(0, "data-tools/reference")
from fixtures_speaker import make_model_dir
make_model_dir(os.path.join(sys.argv[1], "model_full"), size="full", seed=1)
x = np.concatenate([np.load(f"tests/fixtures/foundation/speech_{i}_16k.npy") for i in range(3)])
sf.write(os.path.join(sys.argv[1], "ten_s.wav"), np.resize(x, 160000), 16000, subtype="FLOAT")
PY
cargo build --release "${cargo_flags[@]}" --example time_ecapa -q
vb=$("$bin_dir"/examples/time_ecapa "$tmp/model_full" "$tmp/ten_s.wav" "$tmp/vb.npy" 5)
sb=$("$py" data-tools/reference/bench_speechbrain.py ecapa "$tmp/ten_s.wav" --model-dir "$tmp/model_full" --out "$tmp/sb.npy" --repeats 5 2>/dev/null)
echo "$vb"; echo "$sb"
"$py" - "$tmp" "$vb" "$sb" <<'PY'
import sys, json, numpy as np
a, b = np.load(sys.argv[1] + "/vb.npy"), np.load(sys.argv[1] + "/sb.npy")
cos = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
err = float(np.abs(a - b).max() / np.abs(b).max())
v, s = json.loads(sys.argv[2]), json.loads(sys.argv[3])
print(f"full-size ECAPA, 10 s: cosine {cos:.8f}, max abs err {err:.2e} of largest; "
      f"batch 1: voxbrain {v['batch1_ms']} ms vs SpeechBrain {s['batch1_ms']} ms ({s['batch1_ms']/v['batch1_ms']:.2f}x); "
      f"batch 8: {v['batch8_ms']} ms vs {s['batch8_ms']} ms ({s['batch8_ms']/v['batch8_ms']:.2f}x); "
      f"peak RSS voxbrain {v['peak_rss_mb']} MB, SpeechBrain {s['peak_rss_mb']} MB")
PY
