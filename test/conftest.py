# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Shared fixtures: real data shipped in the repository, a bootstrapped model for the
corridor references (cached like the demo's), its map and the queries' descriptors."""

import contextlib
import io
import os
from pathlib import Path
import shutil
import subprocess
import sys
from typing import List

import numpy as np
import pytest
import torch

from patch_netvlad_ros.core.config import get_config

# benchmarks/ is not installed: the tests of the benchmark CLIs and of the authors' harness
# import it from the source tree (appended, so an installed package still comes first).
sys.path.append(str(Path(__file__).resolve().parents[1]))


def _ros_domain() -> str:
    """This process's DDS domain: the run's own, and under pytest-xdist one per worker.

    A run takes ROS_DOMAIN_ID as set, else one from its process id (100-199). xdist workers
    inherit the controller's environment, domain included, so worker gwN takes the run's
    domain + 1 + N (within 100-199): two workers' nodes never see each other's topics.
    """
    run = os.environ.setdefault('ROS_DOMAIN_ID', str(100 + os.getpid() % 100))
    worker = os.environ.get('PYTEST_XDIST_WORKER', '')
    if not worker.startswith('gw'):
        return run
    return str(100 + (int(run) + 1 + int(worker[2:])) % 100)


# ROS tests talk over DDS on a domain of their own, on the loopback interface only, so
# parallel runs and workers on one machine (and robots on the network) never see each other.
os.environ['ROS_DOMAIN_ID'] = _ros_domain()
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')

TEST_DATA = Path(__file__).resolve().parent / 'data'

#: The corridor is evaluated at 320x240 (its images are 160x120): the demo's setting.
CORRIDOR_SIZE = {'image_height': 240, 'image_width': 320}
#: References in :func:`small_map_dir` (the first corridor references): a map that loads
#: in seconds, for the tests that start nodes and processes many times.
SMALL_MAP_REFERENCES = 12


def run_without_native(code: str) -> List[str]:
    """Stdout lines of ``code`` run in a fresh interpreter with PATCH_NETVLAD_NATIVE=0."""
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         env={**os.environ, 'PATCH_NETVLAD_NATIVE': '0'}, check=True)
    return out.stdout.splitlines()


def brute_force_mnn(query: np.ndarray, db: np.ndarray) -> np.ndarray:
    """Exact mutual NN in float64: match [C, Pd] (first index on ties), else -1."""
    sim = np.einsum('cjd,id->cji', db.astype(np.float64), query.astype(np.float64))
    fw, bw = sim.argmax(2), sim.argmax(1)
    mutual = np.take_along_axis(bw, fw, 1) == np.arange(db.shape[1])
    return np.where(mutual, fw, -1)


def unit(x: np.ndarray) -> np.ndarray:
    """Rows of x scaled to unit length, as float32."""
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope='session')
def corridor_set():
    """The corridor image set shipped in the package."""
    from patch_netvlad_ros.core.drives.datasets import corridor
    return corridor()


@pytest.fixture(scope='session')
def corridor_images(corridor_set):
    """(reference images, query images) as RGB arrays."""
    from patch_netvlad_ros.core.model.image import load_image
    return ([load_image(p) for p in corridor_set.references],
            [load_image(p) for p in corridor_set.queries])


@pytest.fixture(scope='session')
def corridor_model(corridor_images):
    """Speed-preset model bootstrapped from the corridor references (cached checkpoint)."""
    from patch_netvlad_ros.core.maps.models import corridor_model as build
    config = get_config('speed', **CORRIDOR_SIZE)
    model, path = build(config, corridor_images[0], seed=0)
    model.checkpoint_path = path
    return model


@pytest.fixture(scope='session')
def corridor_map(corridor_model, corridor_images):
    """Map of the corridor references built with :func:`corridor_model`."""
    from patch_netvlad_ros.core.maps.database import Reference
    from patch_netvlad_ros.core.maps.extraction import build_reference_map
    refs = [Reference(id=f'{i:07d}', stamp=float(i), x=float(i))
            for i in range(len(corridor_images[0]))]
    return build_reference_map(corridor_model, corridor_images[0], refs)


@pytest.fixture(scope='session')
def corridor_map_dir(corridor_map, corridor_model, tmp_path_factory) -> Path:
    """:func:`corridor_map` saved as a map folder, its model linked in (no fit).

    Shared by the modules that run nodes on it; none of them writes into it (a test that
    needs a changed map copies it first).
    """
    from patch_netvlad_ros.core.maps.map_building import map_model_path
    path = corridor_map.save(tmp_path_factory.mktemp('corridor_map') / 'corridor_map')
    map_model_path(path).symlink_to(corridor_model.checkpoint_path)
    return path


@pytest.fixture(scope='session')
def small_map_dir(corridor_model, corridor_images, tmp_path_factory) -> Path:
    """A map of the first corridor references that keeps a copy of its model (no fit).

    :data:`SMALL_MAP_REFERENCES` references at 320x240: a map that loads in seconds.
    Read-only, like :func:`corridor_map_dir`.
    """
    from patch_netvlad_ros.core.maps.database import Reference
    from patch_netvlad_ros.core.maps.extraction import build_reference_map
    from patch_netvlad_ros.core.maps.map_building import map_model_path
    refs = [Reference(id=f'{i:07d}', stamp=float(i), x=float(i))
            for i in range(SMALL_MAP_REFERENCES)]
    ref_map = build_reference_map(corridor_model, corridor_images[0][:SMALL_MAP_REFERENCES],
                                  refs)
    path = ref_map.save(tmp_path_factory.mktemp('small_map') / 'map')
    shutil.copy(corridor_model.checkpoint_path, map_model_path(path))
    return path


@pytest.fixture(scope='session')
def corridor_query_descriptors(corridor_model, corridor_images):
    """Descriptors of every corridor query: (global [Q, Dp], patches per scale [Q, P, Dp])."""
    from patch_netvlad_ros.core.maps.extraction import describe_batches
    batches = list(describe_batches(corridor_model, corridor_images[1]))
    return (torch.cat([b.global_desc for b in batches]),
            [torch.cat([b.patches[s] for b in batches]) for s in range(len(batches[0].patches))])


@pytest.fixture(scope='session')
def demo_offline(corridor_model, tmp_path_factory):
    """The demo run offline once per test run: (exit status, what it printed, its folder).

    Its map is demo_drives.py's (the session's corridor model, fitted), copied where the
    demo looks for it. The demo's step 2 is pnv-evaluate offline on the shipped query
    drive, so its folder holds pnv-evaluate's report.json and plots: test_demo checks what
    the demo prints, test_evaluate compares that report with graph mode (one offline
    evaluation of the drive per run instead of two).
    """
    from demo_drives import demo_map_dir
    from patch_netvlad_ros.cli import demo
    out = tmp_path_factory.mktemp('demo_offline')
    shutil.copytree(demo_map_dir(corridor_model, tmp_path_factory), out / 'corridor_map')
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = demo.main(['--mode', 'offline', '--output', str(out)])
    return status, printed.getvalue(), out


@pytest.fixture
def rng():
    """A seeded numpy generator."""
    return np.random.default_rng(1234)
