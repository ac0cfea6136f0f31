#!/bin/sh
# Installs this checkout's bagmar package into the conda environment of envs/bagmar.yaml.
#
# Snakemake runs this file once, right after it has created that environment ("Providing post-deployment
# scripts", https://snakemake.readthedocs.io/en/stable/snakefiles/deployment.html): from a copy next to the
# environment (.snakemake/conda/<hash>.post-deploy.sh, so this file's own location says nothing), with the
# environment activated ($CONDA_PREFIX is its path) and in Snakemake's working directory. Snakemake passes no
# variable naming the workflow's directory, so the checkout is that working directory: run snakemake from
# the checkout (the Snakefile is at its root), or set BAGMAR_CHECKOUT to it when running elsewhere.
#
# The install is editable: jobs import the checkout's src/, as without conda, and a change to src/ needs no new
# environment (the environment's hash covers envs/bagmar.yaml and this file, not src/). --no-deps: the
# dependencies are envs/bagmar.yaml's pip list, equal to pyproject.toml's (tests/test_packaging.py).
set -eu

checkout=${BAGMAR_CHECKOUT:-$PWD}
if ! grep -qx 'name = "bagmar"' "$checkout/pyproject.toml" 2>/dev/null \
    || [ ! -f "$checkout/src/bagmar/__init__.py" ]; then
    echo "envs/bagmar.post-deploy.sh: $checkout is not a bagmar checkout (pyproject.toml naming bagmar, src/bagmar/);" \
        "run snakemake from the checkout, or set BAGMAR_CHECKOUT to the checkout's path" >&2
    exit 1
fi
checkout=$(cd "$checkout" && pwd -P)

"$CONDA_PREFIX/bin/python" -m pip install --no-deps --editable "$checkout"

# The environment's Python must now find bagmar in this checkout (-I: whatever PYTHONPATH the caller has aside).
"$CONDA_PREFIX/bin/python" -I -c '
import os, sys
import bagmar
found = os.path.dirname(os.path.realpath(bagmar.__file__))
if found != os.path.realpath(sys.argv[1]):
    sys.exit(f"envs/bagmar.post-deploy.sh: the environment imports bagmar from {found}, not {sys.argv[1]}")
' "$checkout/src/bagmar"
echo "envs/bagmar.post-deploy.sh: bagmar installed (editable) from $checkout"
