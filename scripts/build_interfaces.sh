#!/usr/bin/env bash
# Build the interfaces in msg/ with rosidl against the PyPI ROS wheels in a venv and
# install them into the venv: C/C++ typesupport libraries into $VENV/lib (the wheels'
# bootstrapper puts it on LD_LIBRARY_PATH), the Python module into
# $VENV/lib/patch_netvlad_ros_interfaces (patch_netvlad_ros/__init__.py adds it to the
# package path), the package into $VENV/share/ament_index. A ROS 2 workspace uses
# `colcon build` instead. Usage: scripts/build_interfaces.sh [VENV_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(cd "${1:-.venv}" && pwd)
BUILD=build/interfaces
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export PATH="$VENV/bin:$PATH"
if ! command -v cmake > /dev/null; then
  "$VENV/bin/pip" install --quiet cmake  # Kitware's PyPI build; Debian's cmake works too
fi
rm -rf "$BUILD"
mkdir -p "$(dirname "$BUILD")"
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
  -DCMAKE_PREFIX_PATH="$VENV" -DCMAKE_INSTALL_PREFIX="$VENV" \
  -DPython3_EXECUTABLE="$VENV/bin/python" -DPython3_FIND_VIRTUALENV=ONLY \
  -DPYTHON_INSTALL_DIR=lib/patch_netvlad_ros_interfaces \
  -DPNV_INSTALL_PYTHON=OFF > "$BUILD.log" 2>&1 || { cat "$BUILD.log"; exit 1; }
cmake --build "$BUILD" -j "$(nproc)" >> "$BUILD.log" 2>&1 || { tail -50 "$BUILD.log"; exit 1; }
cmake --install "$BUILD" >> "$BUILD.log" 2>&1 || { tail -50 "$BUILD.log"; exit 1; }
