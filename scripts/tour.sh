#!/usr/bin/env bash
# The main job: the furthest tutorial step voxbrain can run, on bundled audio (offline).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)"; exit 1; }
source scripts/ensure_cmake.sh
cargo run --release --locked --bin voxbrain -- tour "$@"
