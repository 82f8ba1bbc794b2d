"""Fixtures for voxbrain's bundled ASR model (models/asr-crdnn-voxbrain-synth), trained by
voxbrain's own recipe (recipes/asr): SpeechBrain 1.1.2's `EncoderDecoderASR.from_hparams`
loads the folder as it is and transcribes held-out utterances (test voices speaking test
sentences the recipe never trained on, copied into tests/fixtures/asr_trained/ by the bundling
step) and the bundled real recordings, one utterance at a time (beam search with the RNNLM, as
the yaml says); the encoder output of each is kept too. The Rust test compares voxbrain's
transcripts, tokens and encoder outputs with these.
"""

import json
import os
import tempfile

import numpy as np
import torch
from speechbrain.inference.ASR import EncoderDecoderASR

from fixtures_asr import read_wav

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def asr_trained(out_dir):
    d = os.path.join(out_dir, "asr_trained")
    model = EncoderDecoderASR.from_hparams(
        source=os.path.join(ROOT, "models", "asr-crdnn-voxbrain-synth"), savedir=tempfile.mkdtemp()
    )
    model.eval()
    with open(os.path.join(d, "utterances.json")) as f:
        utts = json.load(f)
    real_dir = os.path.join(out_dir, "real_speech")
    with open(os.path.join(real_dir, "manifest.json")) as f:
        real = json.load(f)
    for uid, e in sorted(real.items()):
        utts.append({"id": uid, "wav": os.path.relpath(
            e["file_path"].replace("{data_root}", real_dir), d), "words": e["words"], "real": True})
    one = torch.tensor([1.0])
    out = []
    with torch.no_grad():
        for u in utts:
            x = read_wav(os.path.join(d, u["wav"])).unsqueeze(0)
            enc = model.encode_batch(x, one)
            words, toks = model.transcribe_batch(x, one)
            entry = dict(u, hyp=words[0], tokens=[int(t) for t in toks[0]],
                         enc_shape=list(enc.shape))
            if not u.get("real"):
                name = f"{u['id']}_enc.npy"
                np.save(os.path.join(d, name), enc.numpy().astype(np.float32))
                entry["enc"] = name
            out.append(entry)
            print(u["id"], "|", u["words"], "|", words[0])
    with open(os.path.join(d, "speechbrain.json"), "w") as f:
        json.dump({"utterances": out}, f, indent=2, sort_keys=True)
