#!/usr/bin/env python3
"""Writes SpeechBrain reference outputs (the parity fixtures) into tests/fixtures/.

Run inside the harness venv (see setup_venv.sh):
    $VENV/bin/python data-tools/reference/make_fixtures.py foundation

Each target lives in its own module `fixtures_<target>.py` exposing `<target>(out_dir)`, writes
a folder of inputs (wav/flac/...) and SpeechBrain outputs (.npy/.json) under tests/fixtures/,
and is registered in TARGETS below. The Rust tests read them; nothing here runs in CI.
"""

import argparse
import importlib
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# target name -> module (each module defines a function with the target's name)
TARGETS = {
    "foundation": "fixtures_foundation",
    "dataio": "fixtures_dataio",
    "pretrained": "fixtures_pretrained",
    "speaker": "fixtures_speaker",
    "separation": "fixtures_separation",
    "asr": "fixtures_asr",
    "wer": "fixtures_wer",
    "finetune": "fixtures_finetune",
    "separation_train": "fixtures_separation_train",
    "separation_trained": "fixtures_separation_trained",
    "asr_trained": "fixtures_asr_trained",
    "joint_ctc": "fixtures_joint_ctc",
    "asr_ctc": "fixtures_asr_ctc",
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("targets", nargs="+", choices=sorted(TARGETS) + ["all"], help="fixture sets to write")
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    names = sorted(TARGETS) if "all" in args.targets else args.targets
    for name in names:
        module = importlib.import_module(TARGETS[name])
        getattr(module, name)(args.out)
        print(f"{name}: fixtures written to {args.out}")


if __name__ == "__main__":
    main()
