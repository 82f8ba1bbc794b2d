#!/usr/bin/env bash
# Executes every notebook in this folder headless in real Jupyter with the evcxr kernel, as a
# user would run them, and fails on anything a reader would see go wrong: an error output, a
# panic, or any text on stderr (evcxr reports a panicking cell as a success, so stderr is read).
# Executed copies (outputs embedded) go to notebooks/executed/ (git-ignored). The last line is
# the summary: notebooks, cells, images, audio players, seconds.
#
# Installs what it needs: Jupyter's client side (nbclient, nbformat, ipykernel, jupyter_client)
# in a venv under ~/.cache/voxbrain/jupyter-venv, and evcxr_jupyter (cargo install --locked).
# Each notebook gets its own EVCXR_TMPDIR (two kernels sharing one crash); compiled
# dependencies are shared through evcxr's `:cache`, set in a private init.evcxr, so only the
# first notebook compiles voxbrain (at evcxr's default opt-level 2: expect ~20-30 min on 2 cores).
#
#   bash notebooks/run-in-jupyter.sh [NOTEBOOK.ipynb ...]
set -euo pipefail
cd "$(dirname "$0")"
here="$(pwd)"
source ../scripts/ensure_cmake.sh

venv="${VOXBRAIN_JUPYTER_VENV:-$HOME/.cache/voxbrain/jupyter-venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet nbclient nbformat ipykernel jupyter_client

export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v evcxr_jupyter >/dev/null 2>&1; then
  echo "installing evcxr_jupyter (cargo install --locked, a few minutes)" >&2
  cargo install --locked evcxr_jupyter
fi
evcxr_jupyter --install >/dev/null

# A private evcxr config: a shared compilation cache, nothing from the user's own init files.
export EVCXR_CONFIG_DIR="${VOXBRAIN_EVCXR_CONFIG_DIR:-$HOME/.cache/voxbrain/evcxr-config}"
mkdir -p "$EVCXR_CONFIG_DIR"
echo ":cache 8192" > "$EVCXR_CONFIG_DIR/init.evcxr"

mkdir -p executed
if [ "$#" -gt 0 ]; then notebooks=("$@"); else notebooks=([0-9][0-9]_*.ipynb); fi
exec "$venv/bin/python" - "$here" "${notebooks[@]}" <<'PY'
import os, shutil, sys, tempfile, time

import nbformat
from nbclient import NotebookClient

here, names = sys.argv[1], sys.argv[2:]
t0 = time.time()
cells = images = players = 0
problems = []
for name in names:
    nb = nbformat.read(os.path.join(here, name), as_version=4)
    tmp = tempfile.mkdtemp(prefix="evcxr-" + name.split(".")[0] + "-")
    os.environ["EVCXR_TMPDIR"] = tmp  # the kernel inherits it: one per notebook
    start = time.time()
    client = NotebookClient(nb, kernel_name="rust", timeout=3600, allow_errors=True,
                            resources={"metadata": {"path": here}})
    try:
        client.execute()
    except Exception as e:  # a dead kernel or a timeout
        problems.append(f"{name}: {type(e).__name__}: {e}")
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        cells += 1
        for out in cell.get("outputs", []):
            where = f"{name}, code cell {i + 1}"
            if out.output_type == "error":
                problems.append(f"{where}: {out.get('ename')}: {out.get('evalue')}")
            elif out.output_type == "stream":
                if out.name == "stderr" and out.text.strip():
                    problems.append(f"{where}: stderr: {out.text.strip()[:500]}")
                if "panicked" in out.text:
                    problems.append(f"{where}: panic: {out.text.strip()[:500]}")
            elif out.output_type in ("display_data", "execute_result"):
                data = out.get("data", {})
                images += sum(1 for k in data if k in ("image/png", "image/svg+xml"))
                players += data.get("text/html", "").count("<audio")
    shutil.rmtree(tmp, ignore_errors=True)  # ~1.4 GB of build output per notebook
    nbformat.write(nb, os.path.join(here, "executed", name))
    print(f"{name}: {time.time() - start:.0f} s", file=sys.stderr)
for p in problems:
    print("PROBLEM " + p, file=sys.stderr)
print(f"notebooks: {len(names)}, cells: {cells}, images: {images}, audio players: {players}, "
      f"seconds: {time.time() - t0:.0f}" + (f", problems: {len(problems)}" if problems else ""))
sys.exit(1 if problems else 0)
PY
