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
# SIMD=avx2 builds voxbrain without its AVX-512 paths (`--no-default-features`, in target/avx2),
# so that an AVX-512 machine times the AVX2 path most CPUs take; SIMD=native (the default) keeps
# them (each path is still chosen at run time by what the CPU has). The scripts pass
# "${cargo_flags[@]}" to cargo, and the Rust side's JSON lines name the path it took ("simd").
case "${SIMD:-native}" in
  native) cargo_flags=(--features avx512) ;;
  avx2) cargo_flags=(--no-default-features); export CARGO_TARGET_DIR="$root/target/avx2" ;;
  *) echo "SIMD=${SIMD}: expected native or avx2" >&2; exit 2 ;;
esac
bin_dir="${CARGO_TARGET_DIR:-$root/target}/release"
