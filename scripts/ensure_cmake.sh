#!/usr/bin/env bash
# SentencePiece (the tokenizer of the ASR models) is built from its C++ sources by the
# `sentencepiece` crate, which needs cmake. A fresh machine has none: install it from PyPI
# (a self-contained wheel), falling back to apt-get.
if command -v cmake >/dev/null 2>&1; then
  return 0 2>/dev/null || exit 0
fi
export PATH="$HOME/.local/bin:$PATH"
if ! command -v cmake >/dev/null 2>&1; then
  echo "voxbrain: installing cmake (needed to build SentencePiece)" >&2
  python3 -m pip install --quiet cmake 2>/dev/null \
    || python3 -m pip install --quiet --user cmake 2>/dev/null \
    || { command -v apt-get >/dev/null && (apt-get update -qq && apt-get install -y -qq cmake); } \
    || { echo "voxbrain: could not install cmake; install it and retry" >&2; exit 1; }
  hash -r
fi
