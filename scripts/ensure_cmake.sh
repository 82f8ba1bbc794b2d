#!/usr/bin/env bash
# Sourced by scripts/test.sh and scripts/tour.sh. SentencePiece (the tokenizer of the ASR
# models) is built from its C++ sources by the `sentencepiece` crate, which needs cmake. A
# fresh machine has none: install it from PyPI (a self-contained wheel; its bin directory is
# put on PATH, whatever pyenv or --user did with the launcher), falling back to apt-get.
if ! command -v cmake >/dev/null 2>&1; then
  echo "voxbrain: installing cmake (needed to build SentencePiece)" >&2
  python3 -m pip install --quiet cmake 2>/dev/null \
    || python3 -m pip install --quiet --user cmake 2>/dev/null \
    || { command -v apt-get >/dev/null && apt-get update -qq && apt-get install -y -qq cmake; } \
    || true
  cmake_bin="$(python3 -c 'import cmake; print(cmake.CMAKE_BIN_DIR)' 2>/dev/null || true)"
  if [ -n "$cmake_bin" ] && [ -x "$cmake_bin/cmake" ]; then
    export PATH="$cmake_bin:$PATH"
  fi
  hash -r
  command -v cmake >/dev/null 2>&1 || { echo "voxbrain: could not install cmake; install it and retry" >&2; exit 1; }
fi
