#!/usr/bin/env bash
# Create or update the project's virtual environment; idempotent and offline-safe after
# the first run. Usage: scripts/setup.sh [VENV_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
STAMP="$VENV/.setup-$(cat requirements.txt requirements-nodeps.txt requirements-ros.txt setup.py \
  CMakeLists.txt package.xml msg/*.msg | sha256sum | cut -c1-16)"
if [ -f "$STAMP" ]; then
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
PIP="$VENV/bin/pip"
echo "[setup] installing Python dependencies into $VENV (torch is large: a few minutes)"
"$PIP" install --quiet -r requirements.txt -r requirements-ros.txt
"$PIP" install --quiet --no-deps -r requirements-nodeps.txt
"$PIP" install --quiet --no-deps -e .
echo "[setup] building the ROS 2 interfaces in msg/ against the ROS wheels (rosidl + CMake)"
bash scripts/build_interfaces.sh "$VENV"
echo "[setup] converting ImageNet VGG16 weights into the cache (checksum-verified)"
"$VENV/bin/python" -m patch_netvlad_ros.cli.bootstrap --convert-only
rm -f "$VENV"/.setup-*
touch "$STAMP"
echo "[setup] done"
