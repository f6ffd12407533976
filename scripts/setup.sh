#!/usr/bin/env bash
# Create or update the project's virtual environment; idempotent and offline-safe after
# the first run. Usage: scripts/setup.sh [VENV_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
NATIVE=patch_netvlad_ros/core/native
STAMP="$VENV/.setup-$(cat requirements.txt requirements-nodeps.txt requirements-ros.txt setup.py \
  patch_netvlad_ros_interfaces/CMakeLists.txt patch_netvlad_ros_interfaces/package.xml \
  patch_netvlad_ros_interfaces/msg/*.msg $NATIVE/CMakeLists.txt $NATIVE/variants.py \
  $NATIVE/*.[ch] | sha256sum | cut -c1-16)"
if [ -f "$STAMP" ] && [ -d "$NATIVE/prebuilt" ]; then
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
echo "[setup] building the interfaces package patch_netvlad_ros_interfaces against the ROS" \
  "wheels (rosidl + CMake)"
bash scripts/build_interfaces.sh "$VENV"
echo "[setup] building the C helpers for each CPU level (CMake)"
bash scripts/build_native.sh "$VENV"
echo "[setup] converting ImageNet VGG16 weights into the cache (checksum-verified)"
"$VENV/bin/python" -m patch_netvlad_ros.cli.bootstrap --convert-only
rm -f "$VENV"/.setup-*
touch "$STAMP"
echo "[setup] done"
