#!/usr/bin/env bash
# The ASR recipe, one command: a sentence corpus from WordNet's usage examples (closed
# vocabulary; held-out sentences), spoken by espeak-ng voices at 16 kHz (held-out test voices
# speaking held-out sentences), a SentencePiece tokenizer, an RNN LM, a small CRDNN +
# attentional GRU decoder trained from scratch with joint CTC + attention (hyperparams.yaml),
# and its WER with beam search + LM on the held-out test sets.
#
#   bash recipes/asr/run.sh [OUT] [extra yaml overrides, e.g. "number_of_epochs: 2"]
#
# OUT (default results/asr) gets text/, corpus/, manifests, tokenizer.model and train/ (lm.ckpt,
# save/ checkpoints, steps.jsonl, model/ in SpeechBrain's layout, results.json). Started again
# with the same OUT, it reuses the data and resumes training from the last checkpoint (also
# after a kill).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$(mkdir -p "${1:-$root/results/asr}" && cd "${1:-$root/results/asr}" && pwd)"
overrides="${2:-}"
need=()
command -v espeak-ng >/dev/null || need+=(espeak-ng)
[ -f /usr/share/wordnet/data.noun ] || need+=(wordnet-base)
if [ ${#need[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || { echo "needed: ${need[*]} (apt-get install ${need[*]})"; exit 1; }
  (apt-get update -qq && apt-get install -y -qq "${need[@]}") >/dev/null
fi
# SentencePiece's trainer (Python package), in its own venv outside the repository.
spm_venv="${VOXBRAIN_SPM_VENV:-$HOME/.cache/voxbrain-spm}"
if ! "$spm_venv/bin/python" -c "import sentencepiece" 2>/dev/null; then
  python3 -m venv "$spm_venv"
  "$spm_venv/bin/pip" install -q sentencepiece==0.2.0
fi
cd "$root"
source scripts/ensure_cmake.sh
cargo build --release --locked --bin voxbrain
cargo build --release --locked -p voxbrain-data
bin="$root/target/release"
SECONDS=0

# The separation recipe's voices: train voices and test voices never overlap.
train_voices="en-us+m3:160:45,en+f3:150:60,en-us+m7:135:30,en-gb-scotland+f2:170:55,en-us+f4:145:70,en+m5:155:40,en-029+f1:165:65,en-gb-x-rp+m1:140:35,en-us+Andy:150:50,en+Annie:155:55,en-029+m2:145:45,en-us-nyc+f1:150:60"
test_voices="en-us+m1:150:50,en+f5:150:62,en-us-nyc+Alex:155:45,en-029+f2:145:58"
if [ ! -f "$out/test_harvard.json" ]; then
  "$bin/voxbrain-data" text --out "$out/text" --vocab 3000 --valid 200 --test 200 --seed 0
  n_train=$(wc -l < "$out/text/train.txt")
  "$bin/voxbrain-data" synth --out "$out/corpus/train" --voices "$train_voices" --speakers 12 \
    --chapters 4 --utterances $(( (n_train + 47) / 48 )) --sample-rate 16000 --seed 0 \
    --text "$out/text/train.txt"
  "$bin/voxbrain-data" synth --out "$out/corpus/valid" --voices "$train_voices" --speakers 8 \
    --chapters 1 --utterances 25 --sample-rate 16000 --seed 2 --text "$out/text/valid.txt"
  "$bin/voxbrain-data" synth --out "$out/corpus/test" --voices "$test_voices" --speakers 4 \
    --chapters 1 --utterances 50 --sample-rate 16000 --seed 1 --text "$out/text/test.txt"
  # Held-out text from another source: Harvard sentences, by the held-out voices.
  "$bin/voxbrain-data" synth --out "$out/corpus/harvard" --voices "$test_voices" --speakers 4 \
    --chapters 1 --utterances 10 --sample-rate 16000 --seed 3 \
    --text "$root/recipes/separation/test_sentences.txt"
  for s in train valid test harvard; do
    "$bin/voxbrain-data" librispeech-to-json "$out/corpus/$s" --out "$out/$s.tmp.json"
  done
  for s in train valid test; do mv "$out/$s.tmp.json" "$out/$s.json"; done
  mv "$out/harvard.tmp.json" "$out/test_harvard.json"
fi
if [ ! -f "$out/tokenizer.model" ]; then
  vocab=$(sed -n 's/^output_neurons: *\([0-9]*\).*/\1/p' "$here/hyperparams.yaml")
  "$spm_venv/bin/python" "$here/train_tokenizer.py" "$out/text/train.txt" "$vocab" "$out/tokenizer.model"
fi
echo "data ready in ${SECONDS} s"
"$bin/voxbrain" train-asr --hparams "$here/hyperparams.yaml" ${overrides:+--overrides "$overrides"} \
  --tokenizer "$out/tokenizer.model" --train "$out/train.json" --valid "$out/valid.json" \
  --lm-text "$out/text/lm.txt" --test "test=$out/test.json" --test "harvard=$out/test_harvard.json" \
  --output-dir "$out/train"
echo "recipe finished in ${SECONDS} s; model in $out/train/model, test WER in $out/train/results.json"
