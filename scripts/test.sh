#!/usr/bin/env bash
# README's test command: set up (idempotent), lint, then the whole test suite; arguments go to
# pytest, e.g. `-m core`, `-m node`, `-m graph` for one tier (pyproject.toml lists the tiers).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
. .venv/bin/activate
export MUJOCO_GL=osmesa PYOPENGL_PLATFORM=osmesa
echo "== ruff check"
ruff check l1flow_ros test bench launch setup.py
echo "== pytest"
python -m pytest "$@"
