# Sourced by the reference scripts (`source "$(dirname "$0")/prologue.sh" "$@"`): sets `root`
# (the repository, also the working directory), `venv` and `py` (the harness venv: the first
# argument, else $VOXBRAIN_SB_VENV, else ~/.cache/voxbrain-sbvenv; see setup_venv.sh) and `tmp`
# (the KEEP directory when KEEP is set, so models and audio survive for reruns and profiling;
# else a temporary directory removed on exit), and keeps SpeechBrain offline and quiet.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${1:-${VOXBRAIN_SB_VENV:-$HOME/.cache/voxbrain-sbvenv}}"
py="$venv/bin/python"
if [ -n "${KEEP:-}" ]; then
  tmp="$KEEP"; mkdir -p "$tmp"
else
  tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
fi
cd "$root"
export HF_HUB_OFFLINE=1 PYTHONWARNINGS=ignore
