#!/usr/bin/env bash
# The separation recipe, one command: an espeak-ng corpus (train voices; held-out test voices
# speaking held-out sentences), two-voice mixtures at 8 kHz, a small SepFormer trained from
# scratch with PIT SI-SNR (hyperparams.yaml), and its SI-SNR improvement on the test mixtures.
#
#   bash recipes/separation/run.sh [OUT] [extra yaml overrides, e.g. "number_of_epochs: 2"]
#
# OUT (default results/separation) gets corpus/, mixtures/, and train/ (save/ checkpoints,
# steps.jsonl, model/ in SpeechBrain's layout, results.json). Started again with the same OUT,
# it reuses the data and resumes training from the last checkpoint (also after a kill).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$(mkdir -p "${1:-$root/results/separation}" && cd "${1:-$root/results/separation}" && pwd)"
overrides="${2:-}"
if ! command -v espeak-ng >/dev/null; then
  command -v apt-get >/dev/null || { echo "espeak-ng is needed (apt-get install espeak-ng)"; exit 1; }
  (apt-get update -qq && apt-get install -y -qq espeak-ng) >/dev/null
fi
cd "$root"
source scripts/ensure_cmake.sh
cargo build --release --locked --bin voxbrain
cargo build --release --locked -p voxbrain-data
bin="$root/target/release"
SECONDS=0

# Train voices and test voices never overlap (espeak-ng voice+variant:wpm:pitch; espeak-ng
# ignores variants after en-gb, hence en+...).
train_voices="en-us+m3:160:45,en+f3:150:60,en-us+m7:135:30,en-gb-scotland+f2:170:55,en-us+f4:145:70,en+m5:155:40,en-029+f1:165:65,en-gb-x-rp+m1:140:35,en-us+Andy:150:50,en+Annie:155:55,en-us+Michael:145:45,en-us+f2:150:60"
test_voices="en-us+m1:150:50,en+f5:150:62,en-us-nyc+Alex:155:45,en-029+f2:145:58"
if [ ! -f "$out/mixtures/test/mixtures.json" ]; then
  "$bin/voxbrain-data" synth --out "$out/corpus/train" --voices "$train_voices" --speakers 12 \
    --chapters 2 --utterances 40 --sample-rate 8000 --seed 0
  "$bin/voxbrain-data" synth --out "$out/corpus/test" --voices "$test_voices" --speakers 4 \
    --chapters 1 --utterances 10 --sample-rate 8000 --seed 1 --text "$here/test_sentences.txt"
  "$bin/voxbrain-data" mix "$out/corpus/train" --out "$out/mixtures/train" --count 3000 --seed 0
  "$bin/voxbrain-data" mix "$out/corpus/train" --out "$out/mixtures/valid" --count 40 --seed 1
  "$bin/voxbrain-data" mix "$out/corpus/test" --out "$out/mixtures/test" --count 40 --seed 2
fi
echo "data ready in ${SECONDS} s"
"$bin/voxbrain" train-separation --hparams "$here/hyperparams.yaml" ${overrides:+--overrides "$overrides"} \
  --train "$out/mixtures/train/mixtures.json" --valid "$out/mixtures/valid/mixtures.json" \
  --test "$out/mixtures/test/mixtures.json" --output-dir "$out/train"
echo "recipe finished in ${SECONDS} s; model in $out/train/model, test SI-SNRi in $out/train/results.json"
