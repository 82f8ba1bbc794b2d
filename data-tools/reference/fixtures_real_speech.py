"""SpeechBrain's embeddings and verification scores of the bundled real recordings
(tests/fixtures/real_speech) with the OFFICIAL spkrec-ecapa-voxceleb weights.

Usage: python fixtures_real_speech.py MODEL_DIR
MODEL_DIR holds the official files in SpeechBrain's layout, e.g. from
`voxbrain-data fetch-official spkrec-ecapa-voxceleb --out MODEL_DIR`.
Each utterance is embedded alone (batch of one): SB's outputs change with batch padding.
Writes sb_embeddings.npy ([n, 192], manifest order), sb_scores.json (every pair's
verify_files score) into tests/fixtures/real_speech/."""

import itertools
import json
import os
import sys

import numpy as np
import torch
from speechbrain.inference.speaker import SpeakerRecognition

HERE = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "real_speech"))


def main(model_dir):
    torch.set_num_threads(2)
    manifest = json.load(open(os.path.join(HERE, "manifest.json")))
    ids = list(manifest)
    spk = SpeakerRecognition.from_hparams(source=model_dir, savedir=os.path.join(model_dir, "_sb_savedir"),
                                         overrides={"pretrained_path": model_dir})
    embs = []
    for i in ids:
        path = manifest[i]["file_path"].replace("{data_root}", HERE)
        wav = spk.load_audio(path)
        emb = spk.encode_batch(wav.unsqueeze(0), torch.tensor([1.0]))
        embs.append(emb.squeeze().detach().numpy().astype(np.float32))
    np.save(os.path.join(HERE, "sb_embeddings.npy"), np.stack(embs))
    scores = []
    for a, b in itertools.combinations(ids, 2):
        pa = manifest[a]["file_path"].replace("{data_root}", HERE)
        pb = manifest[b]["file_path"].replace("{data_root}", HERE)
        score, pred = spk.verify_files(pa, pb)
        scores.append({"a": a, "b": b, "score": float(score), "prediction": bool(pred),
                       "same_speaker": manifest[a]["spkID"] == manifest[b]["spkID"]})
    meta = {"speechbrain": __import__("speechbrain").__version__, "torch": torch.__version__,
            "model": "speechbrain/spkrec-ecapa-voxceleb (official weights)", "ids": ids, "pairs": scores}
    with open(os.path.join(HERE, "sb_scores.json"), "w") as f:
        json.dump(meta, f, indent=1)
    same = [p["score"] for p in scores if p["same_speaker"]]
    diff = [p["score"] for p in scores if not p["same_speaker"]]
    print(f"same-speaker min {min(same):.4f}, different-speaker max {max(diff):.4f}")


if __name__ == "__main__":
    main(sys.argv[1])
