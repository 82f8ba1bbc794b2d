"""Data pipeline fixtures: SpeechBrain's DynamicItemDataset ordering, loader batches and
PaddedBatch values, for the Rust parity tests (tests/dataio_parity.rs).

Writes into tests/fixtures/dataio/:
- manifest.json: a synthetic manifest (60 data points, lengths with many ties, `{data_root}`
  paths) and sb_order.json: SpeechBrain's ids, in order, for several filtered_sorted
  argument combinations and for the sequential batches of 8 of a DataLoader with PaddedBatch.
- if corpus/ exists (made by `voxbrain-data synth`, see tests/fixtures/dataio/README.md):
  sb_corpus.json (the tutorial's parse_to_json of it, lengths in samples) and padded batch
  values (padded_signal.npy, padded_signal_lens.npy, padded_tokens.npy, padded_tokens_lens.npy).
"""

import glob
import json
import os

import numpy as np
import torch

from common import save_json, save_npy

N = 60


def _manifest(path):
    rng = np.random.default_rng(3)
    words_pool = ["THE", "BIRCH", "CANOE", "SLID", "ON", "SMOOTH", "PLANKS", "GLUE", "SHEET", "DARK"]
    data = {}
    for i in range(N):
        spk = 100 + i % 7
        uid = f"{spk}-{2000 + i % 3}-{i:04d}"
        # Few distinct lengths: ties everywhere, to pin down the order of equal keys.
        length = float(rng.choice([1.5, 2.0, 2.25, 3.0, 4.5, 7.0]))
        n_words = int(rng.integers(1, 9))
        data[uid] = {
            "file_path": "{data_root}/" + f"{spk}/{uid}.flac",
            "words": " ".join(rng.choice(words_pool, n_words)),
            "spkID": f"speaker_{spk}",
            "length": length,
            "samples": int(length * 16000),
        }
    # Insertion order must not be sorted by id: shuffle it (a real glob order is arbitrary too).
    keys = list(data)
    rng.shuffle(keys)
    data = {k: data[k] for k in keys}
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")


COMBOS = {
    # name: filtered_sorted kwargs (Rust tests build the same from this file).
    "sort_length": dict(sort_key="length"),
    "sort_length_reverse": dict(sort_key="length", reverse=True),
    "sort_length_select20": dict(sort_key="length", select_n=20),
    "reverse_select25": dict(sort_key="length", reverse=True, select_n=25),
    "select15_only": dict(select_n=15),
    "min2_max4.5": dict(key_min_value={"length": 2.0}, key_max_value={"length": 4.5}, sort_key="length"),
    "min2.25_reverse_select10": dict(key_min_value={"length": 2.25}, sort_key="length", reverse=True, select_n=10),
    "max3_samples_sort": dict(key_max_value={"samples": 48000}, sort_key="samples"),
    "sort_words": dict(sort_key="words"),
    "sort_spk_reverse": dict(sort_key="spkID", reverse=True),
    "sort_n_words_dynamic": dict(sort_key="n_words"),
    "n_words_min3_sort_length": dict(key_min_value={"n_words": 3}, sort_key="length"),
}


def _batches(dataset, batch_size, drop_last):
    from speechbrain.dataio.batch import PaddedBatch
    from torch.utils.data import DataLoader

    dataset.set_output_keys(["id"])
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=drop_last, collate_fn=PaddedBatch)
    return [list(b.id) for b in loader]


def _parse_to_json(root):
    """The tutorial's parse_to_json (parse_data.py), with torchaudio.info -> soundfile.info."""
    import soundfile as sf

    flac_files = sorted(glob.glob(os.path.join(root, "**/*.flac"), recursive=True))
    words_dict = {}
    for txtf in glob.glob(os.path.join(root, "**/*.txt"), recursive=True):
        with open(txtf) as f:
            for line in f.readlines():
                line = line.strip("\n")
                words_dict[line.split(" ")[0]] = " ".join(line.split(" ")[1:])
    examples = {}
    for utterance in flac_files:
        utt_id = os.path.splitext(os.path.basename(utterance))[0]
        examples[utt_id] = {
            "file_path": "{data_root}/" + os.path.relpath(utterance, root),
            "words": words_dict[utt_id],
            "spkID": "speaker_" + utt_id.split("-")[0],
            "length": sf.info(utterance).frames,
        }
    return examples


def dataio(out):
    """DynamicItemDataset / DataLoader / PaddedBatch fixtures."""
    import speechbrain as sb
    from speechbrain.dataio.batch import PaddedBatch
    from speechbrain.dataio.dataset import DynamicItemDataset

    out = os.path.join(out, "dataio")
    os.makedirs(out, exist_ok=True)
    manifest = os.path.join(out, "manifest.json")
    _manifest(manifest)

    def dataset():
        ds = DynamicItemDataset.from_json(manifest, replacements={"data_root": "/data"})
        ds.add_dynamic_item(lambda w: len(w.split()), takes="words", provides="n_words")
        return ds

    order = {"combos": {}, "batches": {}}
    for name, kwargs in COMBOS.items():
        ds = dataset().filtered_sorted(**kwargs)
        order["combos"][name] = {"kwargs": kwargs, "ids": list(ds.data_ids)}
    base = dataset()
    order["file_order"] = list(base.data_ids)
    order["first_point"] = {k: v for k, v in base.data[base.data_ids[0]].items()}
    sorted_ds = dataset().filtered_sorted(sort_key="length")
    order["batches"]["sort_length_bs8"] = _batches(sorted_ds, 8, False)
    order["batches"]["sort_length_bs8_drop_last"] = _batches(dataset().filtered_sorted(sort_key="length"), 8, True)
    order["batches"]["file_order_bs8"] = _batches(dataset(), 8, False)
    save_json(os.path.join(out, "sb_order.json"), order)

    corpus = os.path.join(out, "corpus")
    if not os.path.isdir(corpus):
        print("dataio: no corpus/ (run voxbrain-data synth first): skipping corpus fixtures")
        return
    examples = _parse_to_json(corpus)
    save_json(os.path.join(out, "sb_corpus.json"), examples)
    ds = DynamicItemDataset(examples)
    for item in ds.data.values():
        item["file_path"] = item["file_path"].format(data_root=corpus)
    ds = ds.filtered_sorted(sort_key="length")
    ds.add_dynamic_item(sb.dataio.dataio.read_audio, takes="file_path", provides="signal")

    @sb.utils.data_pipeline.takes("words")
    @sb.utils.data_pipeline.provides("words", "tokens")
    def text_pipeline(words):
        yield words
        # A stand-in tokenizer the Rust test repeats: character codes modulo 50.
        yield torch.LongTensor([ord(c) % 50 for c in words[:40]])

    ds.add_dynamic_item(text_pipeline)
    ds.set_output_keys(["id", "signal", "words", "tokens"])
    batch = PaddedBatch([ds[i] for i in range(3)])
    save_json(os.path.join(out, "sb_padded_ids.json"), {"ids": list(batch.id), "words": list(batch.words)})
    # Every 97th sample: enough to pin down padding and values, small enough to commit.
    save_npy(os.path.join(out, "padded_signal_strided.npy"), batch.signal.data.numpy()[:, ::97])
    save_npy(os.path.join(out, "padded_signal_lens.npy"), batch.signal.lengths.numpy())
    save_npy(os.path.join(out, "padded_tokens.npy"), batch.tokens.data.numpy())
    save_npy(os.path.join(out, "padded_tokens_lens.npy"), batch.tokens.lengths.numpy())
