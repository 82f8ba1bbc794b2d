#!/usr/bin/env bash
# Times ONE fine-tuning step (the tutorial's EncDecFineTune: forward + backward + clip_grad_norm_
# 5.0 + SGD lr 1e-5 step, label smoothing 0.1, dropout 0.0) at the official
# asr-crdnn-rnnlm-librispeech size, batch of 8 ~3 s utterances, in SpeechBrain
# (bench_finetune.py, torch THREADS threads) and voxbrain (examples/time_finetune.rs,
# RAYON_NUM_THREADS=THREADS) in the same run, alternating the two ROUNDS times (the order
# swapped every round: this machine's timings drift), and prints a table of the per-run median
# step times, the ratio SpeechBrain / voxbrain, peak RSS, and the CPU.
#
# Inputs (bench_finetune.py --prepare): the seeded full-size model dir exactly as
# full_size_finetune.py builds it (~700 MB, a minute or two; reused when already in $tmp/model),
# 8 espeak-ng utterances (16-bit wavs) and the tutorial-format manifest.json.
#
# Usage: data-tools/reference/compare_finetune_speed.sh [VENV_DIR]
#        (KEEP=dir keeps model, wavs and manifest there, e.g. KEEP=/tmp/ftbench;
#         ROUNDS=3 alternations; STEPS=5 timed steps per run after one warm-up; THREADS=2;
#         SIMD=avx2 times the build without AVX-512 paths, see prologue.sh;
#         MODEL=dir times that SB-layout folder instead, e.g. MODEL=models/asr-crdnn-voxbrain-synth,
#         the ASR recipe's model, on the same 8 utterances)
set -euo pipefail
source "$(dirname "$0")/prologue.sh" "$@"
rounds="${ROUNDS:-3}"
steps="${STEPS:-5}"
threads="${THREADS:-2}"

"$py" data-tools/reference/bench_finetune.py --prepare "$tmp" --threads "$threads" \
  >"$tmp/prepare.json" 2>"$tmp/prepare.log" || { cat "$tmp/prepare.log"; exit 1; }
model="${MODEL:-$tmp/model}"; manifest="$tmp/manifest.json"
cat "$tmp/prepare.json"

cargo build --release "${cargo_flags[@]}" --example time_finetune -q

run_sb() {
  "$py" data-tools/reference/bench_finetune.py "$model" "$manifest" --rounds "$steps" \
    --threads "$threads" 2>"$tmp/sb.log" || { cat "$tmp/sb.log" >&2; return 1; }
}
run_vb() {
  RAYON_NUM_THREADS="$threads" cargo run --release "${cargo_flags[@]}" -q --example time_finetune -- \
    "$model" "$manifest" --rounds "$steps" 2>"$tmp/vb.log" || { cat "$tmp/vb.log" >&2; return 1; }
}

results=()
for r in $(seq 1 "$rounds"); do
  if [ $((r % 2)) -eq 1 ]; then
    sb=$(run_sb | tail -n 1); echo "$sb"; vb=$(run_vb | tail -n 1); echo "$vb"
  else
    vb=$(run_vb | tail -n 1); echo "$vb"; sb=$(run_sb | tail -n 1); echo "$sb"
  fi
  results+=("$sb|$vb")
done

cpu=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)
ncpu=$(nproc)
avx512=$(grep -qw avx512f /proc/cpuinfo && echo yes || echo no)
"$py" - "$cpu" "$ncpu" "$avx512" "$threads" "$steps" "${MODEL:-}" "${results[@]}" <<'PY'
import json, statistics, sys
cpu, ncpu, avx512, threads, steps, model = sys.argv[1:7]
pairs = [tuple(json.loads(x) for x in r.split("|")) for r in sys.argv[7:]]
for s, v in pairs:
    assert s["what"] == v["what"] == "finetune_step", (s, v)
s0 = pairs[0][0]
size = f"the model in {model}" if model else "official asr-crdnn-rnnlm-librispeech size"
print(f"\nOne fine-tuning step, {size}, batch {s0['batch']} "
      f"({s0['audio_seconds']} s of audio), median of {steps} steps per run after 1 warm-up")
print(f"CPU: {cpu} ({ncpu} CPUs, avx512f: {avx512}); voxbrain's SIMD path: "
      f"{pairs[0][1].get('simd')}; torch / RAYON_NUM_THREADS = {threads}\n")
print(f"{'round':>5}  {'SpeechBrain ms':>14}  {'voxbrain ms':>11}  {'SB/vb':>6}  {'SB RSS MB':>9}  {'vb RSS MB':>9}")
ratios = []
for i, (s, v) in enumerate(pairs, 1):
    ratios.append(s["median_ms"] / v["median_ms"])
    print(f"{i:>5}  {s['median_ms']:>14.1f}  {v['median_ms']:>11.1f}  {ratios[-1]:>5.2f}x  "
          f"{s['peak_rss_mb']:>9.0f}  {v['peak_rss_mb']:>9.0f}")
sb = statistics.median(s["median_ms"] for s, _ in pairs)
vb = statistics.median(v["median_ms"] for _, v in pairs)
print(f"{'median':>5}  {sb:>14.1f}  {vb:>11.1f}  {sb / vb:>5.2f}x  "
      f"{statistics.median(s['peak_rss_mb'] for s, _ in pairs):>9.0f}  "
      f"{statistics.median(v['peak_rss_mb'] for _, v in pairs):>9.0f}")
print(f"\nmedian of the per-round ratios SpeechBrain / voxbrain: {statistics.median(ratios):.2f}x "
      f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})")
PY
