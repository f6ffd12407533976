# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The demo's map of the shipped reference drive, built once per test run.

Built like ``make demo`` builds it (the reference bag at the speed preset, 320x240, fitted
on itself for the demo's 2 m place radius), but with the session's cached corridor model
instead of a model bootstrapped from the drive (minutes), so the tests of pnv-evaluate and
of the demo share one build and one fit.
"""

from pathlib import Path
from typing import Dict

from patch_netvlad_ros.cli.demo import DRIVES, IMAGE_TOPIC, PLACE_RADIUS, POSE_TOPIC
from patch_netvlad_ros.core.drives.drives import read_bag_drive
from patch_netvlad_ros.core.maps.map_building import build_map

_BUILT: Dict[int, Path] = {}


def demo_map_dir(corridor_model, tmp_path_factory) -> Path:
    """Return the folder of the demo's map (built on the first call of the run)."""
    key = id(tmp_path_factory)
    if key not in _BUILT:
        cfg = corridor_model.config
        drive = read_bag_drive(DRIVES / 'reference', IMAGE_TOPIC, POSE_TOPIC,
                               (cfg.image_height, cfg.image_width))
        out = tmp_path_factory.mktemp('demo_map') / 'corridor_map'
        build_map(drive, out, config=cfg, checkpoint=corridor_model.checkpoint_path,
                  place_radius=PLACE_RADIUS)
        _BUILT[key] = out
    return _BUILT[key]
