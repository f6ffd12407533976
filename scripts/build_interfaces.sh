#!/usr/bin/env bash
# Build the interfaces package patch_netvlad_ros_interfaces (rosidl) against the PyPI ROS
# wheels in a venv and install it into the venv as an ament prefix: the typesupport
# libraries into $VENV/lib (the wheels' bootstrapper puts it on LD_LIBRARY_PATH), the
# Python module patch_netvlad_ros_interfaces into the venv's site-packages, the package
# into $VENV/share/ament_index. A ROS 2 workspace uses `colcon build` instead (README).
# Usage: scripts/build_interfaces.sh [VENV_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(cd "${1:-.venv}" && pwd)
BUILD=build/interfaces
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export PATH="$VENV/bin:$PATH"
if ! command -v cmake > /dev/null; then
  "$VENV/bin/pip" install --quiet cmake  # Kitware's PyPI build; Debian's cmake works too
fi
# site-packages relative to the prefix, e.g. lib/python3.11/site-packages
SITE=$("$VENV/bin/python" -c 'import os, sys, sysconfig
print(os.path.relpath(sysconfig.get_path("purelib"), sys.prefix))')
rm -rf "$BUILD"
mkdir -p "$(dirname "$BUILD")"
cmake -S patch_netvlad_ros_interfaces -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_TESTING=OFF -DCMAKE_PREFIX_PATH="$VENV" -DCMAKE_INSTALL_PREFIX="$VENV" \
  -DPython3_EXECUTABLE="$VENV/bin/python" -DPython3_FIND_VIRTUALENV=ONLY \
  -DPYTHON_INSTALL_DIR="$SITE" > "$BUILD.log" 2>&1 || { cat "$BUILD.log"; exit 1; }
cmake --build "$BUILD" -j "$(nproc)" >> "$BUILD.log" 2>&1 || { tail -50 "$BUILD.log"; exit 1; }
cmake --install "$BUILD" >> "$BUILD.log" 2>&1 || { tail -50 "$BUILD.log"; exit 1; }
