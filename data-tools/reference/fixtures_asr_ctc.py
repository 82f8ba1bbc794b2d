"""Fixtures for joint attention + CTC beam search (SpeechBrain's `CTCScorer` as a partial
scorer of `ScorerBuilder`): the seeded small model of the `asr` target
(tests/fixtures/asr/model) with a yaml that gives blank, bos and eos different indices (0, 1,
2; SpeechBrain refuses CTC decoding otherwise) and adds `ctc_scorer` beside the RNNLM and
coverage scorers. SpeechBrain 1.1.2 transcribes the three `asr` utterances one at a time with
CTC weights 0.4 and 0.8; the Rust test decodes the same and compares tokens and scores.
"""

import json
import os
import shutil
import tempfile

import torch
from speechbrain.inference.ASR import EncoderDecoderASR

from fixtures_asr import read_wav

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

CTC_SCORER = """
ctc_scorer: !new:speechbrain.decoders.scorer.CTCScorer
   ctc_fc: !ref <ctc_lin>
   blank_index: !ref <blank_index>
   eos_index: !ref <eos_index>

scorer: !new:speechbrain.decoders.scorer.ScorerBuilder
   full_scorers: [!ref <rnnlm_scorer>,
                  !ref <coverage_scorer>]
   partial_scorers: [!ref <ctc_scorer>]
   weights:
      rnnlm: !ref <lm_weight>
      coverage: !ref <coverage_penalty>
      ctc: !ref <ctc_weight_decode>
"""


def ctc_yaml(text):
    """The `asr` fixture yaml with bos 1, eos 2, the official attention-shift limit, half the
    decoding steps and the CTC scorer."""
    lines = []
    for line in text.splitlines():
        if line.startswith("bos_index:"):
            line = "bos_index: 1"
        elif line.startswith("eos_index:"):
            line = "eos_index: 2"
        elif line.startswith("max_attn_shift:"):
            # The `asr` fixture's 3 blocks whole rows (every score -1e20): which tokens then
            # win is tie-breaking, not CTC scoring.
            line = "max_attn_shift: 240"
        elif line.startswith("max_decode_ratio:"):
            # Seeded decoders never emit EOS: hypotheses run to the last step, and prefixes
            # longer than the frames allow have CTC probability 0 (scores of -1e20, whose
            # order is tie-breaking again). Half the frames keep every prefix possible.
            line = "max_decode_ratio: 0.5"
        elif line.startswith("output_neurons:"):
            line = line.split("#")[0].rstrip() + "  # blank 0, bos 1, eos 2"
        lines.append(line)
    text = "\n".join(lines) + "\n"
    start = text.index("scorer: !new:speechbrain.decoders.scorer.ScorerBuilder")
    end = text.index("decoder: !new:speechbrain.decoders.S2SRNNBeamSearcher")
    text = text[:start] + CTC_SCORER.lstrip() + "\n" + text[end:]
    return text.replace("lm_weight:", "ctc_weight_decode: 0.4\nlm_weight:", 1)


def asr_ctc(out_dir):
    d = os.path.join(out_dir, "asr_ctc")
    os.makedirs(d, exist_ok=True)
    src = os.path.join(out_dir, "asr", "model")
    with open(os.path.join(src, "hyperparams.yaml")) as f:
        yaml = ctc_yaml(f.read())
    with open(os.path.join(d, "hyperparams.yaml"), "w") as f:
        f.write(yaml)
    results = []
    for weight in (0.4, 0.8):
        model_dir = tempfile.mkdtemp()
        for name in os.listdir(src):
            if name != "hyperparams.yaml":
                shutil.copy(os.path.join(src, name), model_dir)
        with open(os.path.join(model_dir, "hyperparams.yaml"), "w") as f:
            f.write(yaml.replace("ctc_weight_decode: 0.4", f"ctc_weight_decode: {weight}"))
        model = EncoderDecoderASR.from_hparams(source=model_dir, savedir=tempfile.mkdtemp())
        model.eval()
        one = torch.tensor([1.0])
        with torch.no_grad():
            for i in range(3):
                x = read_wav(os.path.join(out_dir, "asr", f"utt_{i}.wav")).unsqueeze(0)
                enc = model.encode_batch(x, one)
                hyps, _, scores, _ = model.mods.decoder(enc, one)
                results.append({"ctc_weight": weight, "utt": f"utt_{i}.wav",
                                "tokens": [int(t) for t in hyps[0]],
                                "score": float(scores.reshape(-1)[0]), "frames": int(enc.shape[1])})
                print(weight, i, len(hyps[0]), hyps[0][:12], float(scores.reshape(-1)[0]))
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump({"results": results}, f, indent=2)
