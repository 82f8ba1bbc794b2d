#!/usr/bin/env python3
"""Harness check: a checkpoint written by voxbrain loads in torch with the original values.

    cargo run --example rewrite_ckpt -- tests/fixtures/pretrained/sequential.ckpt /tmp/vb
    $VENV/bin/python data-tools/reference/check_voxbrain_ckpt.py \
        tests/fixtures/pretrained/sequential.ckpt /tmp/vb/voxbrain.ckpt
"""

import sys

import torch


def main():
    original = torch.load(sys.argv[1], map_location="cpu")
    written = torch.load(sys.argv[2], map_location="cpu", weights_only=True)
    assert list(original.keys()) == list(written.keys()) or set(original) == set(written), "keys differ"
    for k, v in original.items():
        w = written[k]
        assert w.dtype == v.dtype, (k, w.dtype, v.dtype)
        assert w.shape == v.shape, (k, w.shape, v.shape)
        assert torch.equal(w, v), k
    # And SpeechBrain's own loader path: load_state_dict into the same architecture.
    model = torch.nn.Sequential(torch.nn.Conv1d(4, 6, 3), torch.nn.BatchNorm1d(6),
                                torch.nn.Linear(5, 3), torch.nn.Embedding(7, 2))
    model.load_state_dict(written, strict=True)
    print(f"OK: {len(written)} tensors identical; torch.load(weights_only=True) and "
          f"load_state_dict(strict=True) accept {sys.argv[2]}")


if __name__ == "__main__":
    main()
