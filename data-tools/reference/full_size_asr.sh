#!/usr/bin/env bash
# One-off full-size check of EncoderDecoderASR (the official asr-crdnn-rnnlm-librispeech
# hyperparams.yaml unchanged: CRDNN 2x(128,256) CNN + 4x1024 BiLSTM + 2x512 DNN, GRU 1024
# decoder with location attention, beam 80, RNNLM 2x2048, 1000 tokens).
#
# Builds in a temp dir a seeded full-size SB-layout model (fixtures_asr.write_model_dir
# size="full": the official yaml byte for byte, the real official normalizer.ckpt, a 1000-piece
# SentencePiece unigram tokenizer trained on generated text with SB's settings, the small
# fixture's weight tricks: forward-walking location attention, calibrated BatchNorm), a ~3 s
# espeak-ng utterance and a 10-minute recording (espeak-ng utterances with pauses), then
#  1. runs voxbrain and SpeechBrain (torch 2 threads) on the 3 s utterance in the same run:
#     encoder max abs error relative to the largest value, beam-search token equality,
#     transcribe_batch time ratio (SpeechBrain / voxbrain), peak RSS of both;
#  2. transcribes the 10-minute recording with voxbrain (transcribe_file's path: chunks cut at
#     quiet points, one at a time): wall time, peak RSS, transcript length. Greedy decoding by
#     default (LONG_DECODING=beam for the beam search: beam 80 + the 2x2048 LM on 10 minutes
#     takes hours on two cores).
#
# Usage: data-tools/reference/full_size_asr.sh [VENV_DIR]
#        (KEEP=dir keeps the model and audio there; REPEATS=3; LONG_DECODING=greedy|beam)
set -euo pipefail
source "$(dirname "$0")/prologue.sh" "$@"
repeats="${REPEATS:-3}"
long_decoding="${LONG_DECODING:-greedy}"

if [ ! -f "$tmp/model_full/lm.ckpt" ]; then
"$py" - "$tmp" <<'PY' 2>"$tmp/make.log" || { cat "$tmp/make.log"; exit 1; }
import os, random, sys
import numpy as np, soundfile as sf, torch, torchaudio
sys.path.insert(0, "data-tools/reference")
from common import SENTENCES, VOICES, espeak, speech
from fixtures_asr import WORDS, read_wav, write_model_dir

out = sys.argv[1]
torch.set_num_threads(2)

def to16k(x, sr):
    y = torchaudio.functional.resample(torch.from_numpy(x), sr, 16000).numpy()
    return (0.9 * y / max(1e-9, float(np.abs(y).max()))).astype(np.float32)

# The ~3 s utterance (16 kHz, 16-bit PCM, as the parity fixtures).
x, sr = speech(2, text="Glue the sheet to the dark blue background.")
y = to16k(x, sr)
assert 2.5 <= len(y) / 16000 <= 3.5, len(y) / 16000
sf.write(os.path.join(out, "utt.wav"), y, 16000, subtype="PCM_16")

# The full-size model; BatchNorm statistics from this utterance and the fixture utterances.
wavs = [read_wav(os.path.join(out, "utt.wav"))] + [
    read_wav(f"tests/fixtures/asr/utt_{i}.wav") for i in range(3)]
write_model_dir(os.path.join(out, "model_full"), wavs, seed=1, size="full")

# 10 minutes: espeak-ng sentences (fixed ones and random word strings, four voices) with
# 0.3-1.2 s pauses, cut to exactly 600 s.
rng = random.Random(0)
parts, n = [], 0
while n < 600 * 16000:
    if rng.random() < 0.5:
        text = rng.choice(SENTENCES)
    else:
        text = " ".join(rng.choice(WORDS).lower() for _ in range(rng.randint(4, 12))) + "."
    voice, speed, pitch = rng.choice(VOICES)
    s = to16k(*espeak(text, voice, speed, pitch))
    pause = np.zeros(int(rng.uniform(0.3, 1.2) * 16000), np.float32)
    parts += [s, pause]
    n += len(s) + len(pause)
sf.write(os.path.join(out, "long.wav"), np.concatenate(parts)[: 600 * 16000], 16000,
         subtype="PCM_16")
PY
fi

cargo build --release "${cargo_flags[@]}" --example time_asr -q
vb=$("$bin_dir"/examples/time_asr "$tmp/model_full" "$tmp/utt.wav" "$tmp/vb.json" "$repeats")
sb=$("$py" data-tools/reference/bench_speechbrain.py asr "$tmp/utt.wav" --model-dir "$tmp/model_full" \
      --out "$tmp/sb.json" --repeats "$repeats" 2>"$tmp/sb.log") || { cat "$tmp/sb.log"; exit 1; }
echo "$vb"; echo "$sb"
"$py" - "$tmp" "$vb" "$sb" <<'PY'
import json, sys
import numpy as np
d = sys.argv[1]
a, b = np.load(d + "/vb.npy"), np.load(d + "/sb.npy")
assert a.shape == b.shape, (a.shape, b.shape)
err = float(np.abs(a - b).max() / np.abs(b).max())
v, s = json.loads(sys.argv[2]), json.loads(sys.argv[3])
same = v["tokens"] == s["tokens"]
first = next((i for i, (x, y) in enumerate(zip(v["tokens"], s["tokens"])) if x != y),
             min(len(v["tokens"]), len(s["tokens"])))
print(f"full-size ASR, {v['seconds']} s, encoder {list(a.shape)}: max abs err {err:.2e} of largest "
      f"({'ok' if err <= 1e-4 else 'OVER 1e-4'}); beam tokens "
      + (f"identical ({len(v['tokens'])})" if same else
         f"DIFFER (voxbrain {len(v['tokens'])}, SpeechBrain {len(s['tokens'])}, first at {first})"))
print(f"encode: voxbrain {v['encode_ms']} ms vs SpeechBrain {s['encode_ms']} ms "
      f"({s['encode_ms'] / v['encode_ms']:.2f}x); transcribe_batch (beam 80 + LM): voxbrain "
      f"{v['transcribe_ms']} ms vs SpeechBrain {s['transcribe_ms']} ms "
      f"({s['transcribe_ms'] / v['transcribe_ms']:.2f}x); peak RSS voxbrain {v['peak_rss_mb']:.0f} MB, "
      f"SpeechBrain {s['peak_rss_mb']} MB")
PY

long=$("$bin_dir"/examples/time_asr "$tmp/model_full" --long "$tmp/long.wav" --decoding "$long_decoding")
echo "$long"
"$py" - "$long" <<'PY'
import json, sys
l = json.loads(sys.argv[1])
print(f"10-minute recording ({l['seconds']} s, {l['chunks']} chunks, {l['decoding']} decoding): "
      f"transcribed in {l['wall_s']} s (model load {l['load_s']} s more), peak RSS "
      f"{l['peak_rss_mb']:.0f} MB, {l['tokens']} tokens, {l['chars']} characters")
PY
