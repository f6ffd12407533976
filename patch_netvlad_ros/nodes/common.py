# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Start-up, network size and shutdown shared by the node executables."""

import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node

from ..core.config import get_config
from ..core.errors import PatchNetVLADError
from ..core.models import map_model_info, MapModelInfo
from ..ros.params import ParameterError

#: Preset of camera_batcher and descriptor_node when neither ``preset`` nor a map names one.
DEFAULT_PRESET = 'speed'


def network_config(p: Dict[str, Any]) -> Tuple[Any, Optional[MapModelInfo]]:
    """Return the network's configuration and the map's model info (None without a map).

    p: a node's parameters ``map_path``, ``preset``, ``image_width``, ``image_height``.
    With a map the configuration is the map's; a preset or size that is set must agree
    with it (ParameterError naming both values). Without one, the preset (empty: the
    default preset) and the sizes that are set (0: the preset's).
    """
    if p['map_path']:
        info = map_model_info(p['map_path'])
        for name, unset in (('preset', ''), ('image_width', 0), ('image_height', 0)):
            theirs = getattr(info.config, name)
            if p[name] != unset and p[name] != theirs:
                raise ParameterError(
                    f"parameter '{name}' = {p[name]!r}, but the map {p['map_path']} was built "
                    f'with {name} {theirs!r}: leave it unset ({unset!r}) to take the '
                    f"map's, or set {theirs!r}")
        return info.config, info
    sizes = {k: p[k] for k in ('image_width', 'image_height') if p[k]}
    return get_config(p['preset'] or DEFAULT_PRESET, **sizes), None


def start_nodes(factories: Sequence[Callable[[], Node]]) -> List[Node]:
    """Construct nodes; on a bad parameter or input destroy those made and re-raise."""
    nodes: List[Node] = []
    try:
        for make in factories:
            nodes.append(make())
    except BaseException:
        for node in nodes:
            node.destroy_node()
        raise
    return nodes


def run_nodes(factories: Sequence[Callable[[], Node]], args: Optional[List[str]] = None,
              threads: Optional[int] = None) -> int:
    """rclpy.init, build the nodes, spin them on one MultiThreadedExecutor, shut down.

    Returns the exit status: 0 after a clean shutdown (Ctrl-C), 2 when a node refused to
    start (bad parameter, missing checkpoint or map); the reason is logged.
    """
    rclpy.init(args=args)
    try:
        try:
            nodes = start_nodes(factories)
        except PatchNetVLADError as exc:
            rclpy.logging.get_logger('patch_netvlad_ros').fatal(f'cannot start: {exc}')
            return 2
        executor = MultiThreadedExecutor(num_threads=threads)
        for node in nodes:
            executor.add_node(node)
        try:
            executor.spin()
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        finally:
            executor.shutdown()
            for node in nodes:
                node.destroy_node()
        return 0
    finally:
        if rclpy.ok():
            rclpy.shutdown()


def run_node(node_class: Callable[..., Node], args: Optional[List[str]] = None) -> int:
    """Run one node (console scripts and `ros2 run`)."""
    return run_nodes([node_class], sys.argv if args is None else args)
