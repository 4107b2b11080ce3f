#!/usr/bin/env bash
# README's main command: set up (idempotent), then the simulated teleop-then-deploy demo
# on the bundled model (l1flow demo). Extra arguments go to `l1flow demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
. .venv/bin/activate
export MUJOCO_GL=osmesa PYOPENGL_PLATFORM=osmesa
exec l1flow demo "$@"
