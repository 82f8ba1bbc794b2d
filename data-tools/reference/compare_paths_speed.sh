#!/usr/bin/env bash
# Times the full-size models on each SIMD path voxbrain can take on this CPU against
# SpeechBrain 1.1.2 (torch 2 threads), alternating in one run: ROUNDS rounds (default 3) of
# SpeechBrain, then voxbrain's avx512 build (when the CPU has AVX-512F), then its avx2 build
# (`--no-default-features`, in target/avx2). Prints one table row per model: the medians and the
# median of the per-round ratios for each path.
#
# On an AVX-512 CPU the avx2 build is compared with SpeechBrain held to AVX2 as well
# (ATEN_CPU_CAPABILITY=avx2, MKL_ENABLE_INSTRUCTIONS=AVX2, ONEDNN_MAX_CPU_ISA=AVX2: torch's own
# kernels, MKL's GEMM and oneDNN's convolutions), which is what both run on an AVX2-only CPU;
# the avx512 build is compared with SpeechBrain as it runs by default.
#
# Models (seeded weights at the official sizes, built once; KEEP=dir keeps them for reruns):
# ECAPA (10 s, batch 1 and 8), SepFormer (5 s at 8 kHz), the ASR (a ~3 s utterance, beam 80 +
# RNNLM; `transcribe_batch` and `encode_batch`). WHAT="ecapa sepformer asr" picks models.
# INT8=1 also times the opt-in int8 path (`quantize_dynamic`) of ECAPA and SepFormer on each
# SIMD path ("avx512+int8", "avx2+int8" columns, against the same SpeechBrain runs).
# Usage: [KEEP=dir] [ROUNDS=3] [WHAT=...] [INT8=1] data-tools/reference/compare_paths_speed.sh [VENV_DIR]
set -euo pipefail
source "$(dirname "$0")/prologue.sh" "$@"
rounds="${ROUNDS:-3}"
what="${WHAT:-ecapa sepformer asr}"

# Models and inputs.
if [[ $what == *ecapa* && ! -f "$tmp/ecapa/embedding_model.ckpt" ]]; then
"$py" - "$tmp" <<'PY'
import os, sys, numpy as np, soundfile as sf
sys.path.insert(0, "data-tools/reference")
from fixtures_speaker import make_model_dir
make_model_dir(os.path.join(sys.argv[1], "ecapa"), size="full", seed=1)
x = np.concatenate([np.load(f"tests/fixtures/foundation/speech_{i}_16k.npy") for i in range(3)])
sf.write(os.path.join(sys.argv[1], "ten_s.wav"), np.resize(x, 160000), 16000, subtype="FLOAT")
PY
fi
if [[ $what == *sepformer* && ! -f "$tmp/sep/model/masknet.ckpt" ]]; then
  "$py" data-tools/reference/fixtures_separation.py --full "$tmp/sep" >/dev/null 2>&1
fi
if [[ $what == *asr* && ! -f "$tmp/asr/lm.ckpt" ]]; then
"$py" - "$tmp" <<'PY' 2>"$tmp/make_asr.log" || { cat "$tmp/make_asr.log"; exit 1; }
import os, sys
import numpy as np, soundfile as sf, torch, torchaudio
sys.path.insert(0, "data-tools/reference")
from common import speech
from fixtures_asr import read_wav, write_model_dir
out = sys.argv[1]
torch.set_num_threads(2)
x, sr = speech(2, text="Glue the sheet to the dark blue background.")
y = torchaudio.functional.resample(torch.from_numpy(x), sr, 16000).numpy()
y = (0.9 * y / max(1e-9, float(np.abs(y).max()))).astype(np.float32)
sf.write(os.path.join(out, "utt.wav"), y, 16000, subtype="PCM_16")
wavs = [read_wav(os.path.join(out, "utt.wav"))] + [
    read_wav(f"tests/fixtures/asr/utt_{i}.wav") for i in range(3)]
write_model_dir(os.path.join(out, "asr"), wavs, seed=1, size="full")
PY
fi

# The builds: one per path this CPU can take.
examples=(--example time_ecapa --example time_sepformer --example time_asr)
paths=(avx2)
grep -qw avx512f /proc/cpuinfo && paths=(avx512 avx2)
for p in "${paths[@]}"; do
  if [ "$p" = avx512 ]; then
    cargo build --release --features avx512 "${examples[@]}" -q
  else
    CARGO_TARGET_DIR="$root/target/avx2" cargo build --release --no-default-features "${examples[@]}" -q
  fi
done
bin() { if [ "$1" = avx512 ]; then echo "$root/target/release/examples"; else echo "$root/target/avx2/release/examples"; fi; }

# SpeechBrain's runs: "sb" as it runs by default; on an AVX-512 CPU also "sb_avx2", held to AVX2.
sb_modes=(sb)
[ "${#paths[@]}" = 2 ] && sb_modes=(sb sb_avx2)
sb_run() {  # sb_run <mode> <bench_speechbrain.py args...>
  local mode=$1; shift
  if [ "$mode" = sb_avx2 ]; then
    ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 \
      "$py" data-tools/reference/bench_speechbrain.py "$@" 2>/dev/null
  else
    "$py" data-tools/reference/bench_speechbrain.py "$@" 2>/dev/null
  fi
}

# Rounds: each line of $log is "<model> <impl> <json>".
log="$tmp/paths.log"; : >"$log"
for r in $(seq "$rounds"); do
  for m in $what; do
    case $m in
      ecapa)
        for s in "${sb_modes[@]}"; do
          echo "ecapa $s $(sb_run "$s" ecapa "$tmp/ten_s.wav" --model-dir "$tmp/ecapa" --repeats 5)" >>"$log"
        done
        for p in "${paths[@]}"; do
          echo "ecapa $p $("$(bin "$p")"/time_ecapa "$tmp/ecapa" "$tmp/ten_s.wav" "$tmp/vb_ecapa.npy" 5)" >>"$log"
          if [ "${INT8:-0}" = 1 ]; then
            echo "ecapa $p+int8 $("$(bin "$p")"/time_ecapa "$tmp/ecapa" "$tmp/ten_s.wav" "$tmp/vb_ecapa.npy" 5 int8)" >>"$log"
          fi
        done ;;
      sepformer)
        for s in "${sb_modes[@]}"; do
          echo "sepformer $s $(sb_run "$s" sepformer "$tmp/sep/model" --seconds 5 --repeats 3)" >>"$log"
        done
        for p in "${paths[@]}"; do
          echo "sepformer $p $("$(bin "$p")"/time_sepformer "$tmp/sep/model" "$tmp/sep/mix5s.npy" "$tmp/sep/mix5s_sources.npy" 3)" >>"$log"
          if [ "${INT8:-0}" = 1 ]; then
            echo "sepformer $p+int8 $("$(bin "$p")"/time_sepformer "$tmp/sep/model" "$tmp/sep/mix5s.npy" "$tmp/sep/mix5s_sources.npy" 3 int8)" >>"$log"
          fi
        done ;;
      asr)
        for s in "${sb_modes[@]}"; do
          echo "asr $s $(sb_run "$s" asr "$tmp/utt.wav" --model-dir "$tmp/asr" --out "$tmp/sb_asr.json" --repeats 3)" >>"$log"
        done
        for p in "${paths[@]}"; do
          echo "asr $p $("$(bin "$p")"/time_asr "$tmp/asr" "$tmp/utt.wav" "$tmp/vb_asr.json" 3)" >>"$log"
        done ;;
    esac
  done
  echo "round $r done" >&2
done

"$py" - "$log" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" <<'PY'
import collections, json, statistics, sys
rows = collections.defaultdict(list)  # (model, impl) -> [json per round]
for line in open(sys.argv[1]):
    model, impl, js = line.split(" ", 2)
    rows[(model, impl)].append(json.loads(js))
metrics = {"ecapa": [("ECAPA, 10 s, batch 1", "batch1_ms"), ("ECAPA, 10 s, batch 8", "batch8_ms")],
           "sepformer": [("SepFormer, 5 s at 8 kHz", "median_ms")],
           "asr": [("ASR, 3 s, beam 80 + RNNLM", "transcribe_ms"), ("ASR encoder, 3 s", "encode_ms")]}
paths = [p for p in ("avx512", "avx512+int8", "avx2", "avx2+int8") if any(k[1] == p for k in rows)]
capped = any(k[1] == "sb_avx2" for k in rows)
# Each path against SpeechBrain on the same instruction set.
against = {"avx512": "sb", "avx2": "sb_avx2" if capped else "sb"}
against.update({p + "+int8": against[p] for p in ("avx512", "avx2")})
print(f"CPU: {sys.argv[2]}; {len(next(iter(rows.values())))} rounds; SpeechBrain 1.1.2, torch 2 threads"
      + ("; the avx2 columns against SpeechBrain held to AVX2" if capped else ""))
head = ["SpeechBrain"] + (["SpeechBrain (AVX2)"] if capped else [])
print("| What | " + " | ".join(head) + " | " + " | ".join(f"voxbrain {p} | ratio {p}" for p in paths) + " |")
print("| --- " * (1 + len(head) + 2 * len(paths)) + "|")
for model in ("ecapa", "sepformer", "asr"):
    if (model, "sb") not in rows:
        continue
    for label, key in metrics[model]:
        sb = {m: [x[key] for x in rows[(model, m)]] for m in set(against.values())}
        cells = [f"{statistics.median(sb[m]):.0f} ms" for m in (["sb", "sb_avx2"] if capped else ["sb"])]
        for p in paths:
            if (model, p) not in rows:
                cells += ["–", "–"]
                continue
            vb = [x[key] for x in rows[(model, p)]]
            ratios = [s / v for s, v in zip(sb[against[p]], vb)]
            cells.append(f"{statistics.median(vb):.0f} ms")
            cells.append(f"{statistics.median(ratios):.2f}x ({', '.join(f'{r:.2f}' for r in ratios)})")
        print(f"| {label} | " + " | ".join(cells) + " |")
PY
