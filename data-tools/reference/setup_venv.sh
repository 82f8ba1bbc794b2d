#!/usr/bin/env bash
# Creates the parity-harness venv (torch + speechbrain from PyPI, a few GB) OUTSIDE the repo.
# Usage: data-tools/reference/setup_venv.sh [VENV_DIR]   (default: $HOME/.cache/voxbrain-sbvenv)
# Also installs espeak-ng (speech synthesis for fixtures) when apt-get is available.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${1:-${VOXBRAIN_SB_VENV:-$HOME/.cache/voxbrain-sbvenv}}"
if ! command -v espeak-ng >/dev/null && command -v apt-get >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq espeak-ng) || echo "espeak-ng not installed: fixtures fall back to the built-in signal generator"
fi
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q -r "$here/requirements.txt"
"$venv/bin/python" -c "import torch, speechbrain; print('torch', torch.__version__, 'speechbrain', speechbrain.__version__)"
echo "$venv"
