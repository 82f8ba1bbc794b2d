"""Pretrained-loading fixtures: HyperPyYAML resolution of the official files, and checkpoints
written by `torch.save(model.state_dict())`."""

import json
import os
import re
import shutil

import numpy as np
import torch

from common import save_json

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
REFERENCE_MODELS = os.path.join(ROOT, "..", "shared", "reference-models")
TUPLE = re.compile(r"^\(.*\)$")


def _to_json(node):
    """The resolved tree in voxbrain's JSON summary form: objects as their class names."""
    import ruamel.yaml

    tag = getattr(node, "tag", None)
    tag = tag.value if tag is not None and hasattr(tag, "value") else None
    for kind in ("!new:", "!name:", "!apply:"):
        if tag and tag.startswith(kind):
            # Objects in full: class, positional and keyword arguments.
            obj = {kind[1:-1]: tag[len(kind):], "args": [], "kwargs": {}}
            if isinstance(node, dict):
                obj["kwargs"] = {str(k): _to_json(v) for k, v in node.items()}
            elif isinstance(node, list):
                obj["args"] = [_to_json(v) for v in node]
            return obj
    if isinstance(node, dict):
        return {str(k): _to_json(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_to_json(v) for v in node]
    if isinstance(node, ruamel.yaml.scalarstring.ScalarString):
        return str(node)
    if isinstance(node, str) and TUPLE.match(node):
        import yaml
        return list(yaml.safe_load("[" + node[1:-1] + "]"))
    if isinstance(node, bool) or node is None or isinstance(node, (int, float, str)):
        if isinstance(node, float):
            return float(node)
        if isinstance(node, int) and not isinstance(node, bool):
            return int(node)
        return node
    return str(node)


def yaml_resolution(out):
    """What HyperPyYAML resolves each official hyperparams.yaml (and a feature-rich one) to."""
    import ruamel.yaml
    from hyperpyyaml import resolve_references

    result = {}
    for name in ["spkrec-ecapa-voxceleb", "asr-crdnn-rnnlm-librispeech", "sepformer-wsj02mix"]:
        with open(os.path.join(REFERENCE_MODELS, name, "hyperparams.yaml")) as f:
            resolved = resolve_references(f)
        tree = ruamel.yaml.YAML().load(resolved)
        result[name] = _to_json(tree)
    # Overrides as SpeechBrain's from_hparams passes them.
    with open(os.path.join(REFERENCE_MODELS, "spkrec-ecapa-voxceleb", "hyperparams.yaml")) as f:
        resolved = resolve_references(f, overrides="n_mels: 40\npretrained_path: /models/ecapa\n")
    result["spkrec-ecapa-voxceleb+overrides"] = _to_json(ruamel.yaml.YAML().load(resolved))
    save_json(os.path.join(out, "yaml_resolution.json"), result)


def checkpoints(out):
    """A state_dict with Conv1d, BatchNorm1d (int64 num_batches_tracked), Linear, Embedding,
    saved with torch.save; every tensor's values go to one .npy with a JSON index."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv1d(4, 6, 3),
        torch.nn.BatchNorm1d(6),
        torch.nn.Linear(5, 3),
        torch.nn.Embedding(7, 2),
    )
    model[1].running_mean.uniform_(-1, 1)
    model[1].running_var.uniform_(0.5, 2)
    model[1].num_batches_tracked += 17
    sd = model.state_dict()
    torch.save(sd, os.path.join(out, "sequential.ckpt"))
    index, flat, off = {}, [], 0
    for k, v in sd.items():
        a = v.detach().double().numpy().ravel()
        index[k] = {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", ""), "offset": off}
        flat.append(a)
        off += a.size
    np.save(os.path.join(out, "sequential_values.npy"), np.concatenate(flat).astype(np.float64))
    save_json(os.path.join(out, "sequential_index.json"), index)
    # A small model directory in SpeechBrain's layout, loadable from a local source.
    model_dir = os.path.join(out, "model_dir")
    os.makedirs(model_dir, exist_ok=True)
    shutil.copy(os.path.join(out, "sequential.ckpt"), os.path.join(model_dir, "model.ckpt"))
    with open(os.path.join(model_dir, "hyperparams.yaml"), "w") as f:
        f.write(
            "# A tiny SpeechBrain-layout model directory for voxbrain's loader tests.\n"
            "pretrained_path: speechbrain/does-not-exist\n"
            "model: !new:torch.nn.Sequential\n"
            "normalizer: !new:speechbrain.processing.features.InputNormalization\n"
            "    norm_type: global\n"
            "pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer\n"
            "    loadables:\n"
            "        model: !ref <model>\n"
            "        normalizer: !ref <normalizer>\n"
            "    paths:\n"
            "        model: !ref <pretrained_path>/model.ckpt\n"
            "        normalizer: !ref <pretrained_path>/normalizer.ckpt\n"
        )
    shutil.copy(os.path.join(ROOT, "tests", "fixtures", "foundation", "normalizer.ckpt"),
                os.path.join(model_dir, "normalizer.ckpt"))


def pretrained(out):
    out = os.path.join(out, "pretrained")
    os.makedirs(out, exist_ok=True)
    yaml_resolution(out)
    checkpoints(out)
