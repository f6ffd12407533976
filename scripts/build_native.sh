#!/usr/bin/env bash
# Build the C helpers (patch_netvlad_ros/core/native/*.c) for every CPU level they use and
# install them beside their sources, into patch_netvlad_ros/core/native/prebuilt/ (the
# editable install's place for them, as build_ext --inplace; not tracked by git). At run
# time the package loads the best build this CPU runs. A ROS 2 workspace's `colcon build`
# builds the same libraries into its install instead. Usage: scripts/build_native.sh [VENV]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(cd "${1:-.venv}" && pwd)
NATIVE=patch_netvlad_ros/core/native
BUILD=build/native
export PATH="$VENV/bin:$PATH"
if ! command -v cmake > /dev/null; then
  "$VENV/bin/pip" install --quiet cmake  # Kitware's PyPI build; Debian's cmake works too
fi
rm -rf "$BUILD" "$NATIVE/prebuilt"
mkdir -p "$(dirname "$BUILD")"
cmake -S "$NATIVE" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
  -DPython3_EXECUTABLE="$VENV/bin/python" \
  -DPNV_NATIVE_INSTALL_DIR="$PWD/$NATIVE/prebuilt" > "$BUILD.log" 2>&1 \
  || { cat "$BUILD.log"; exit 1; }
cmake --build "$BUILD" -j "$(nproc)" >> "$BUILD.log" 2>&1 || { tail -50 "$BUILD.log"; exit 1; }
cmake --install "$BUILD" >> "$BUILD.log" 2>&1 || { tail -50 "$BUILD.log"; exit 1; }
grep -- '-- C helpers:' "$BUILD.log" | sed 's/^-- /[setup] /'
