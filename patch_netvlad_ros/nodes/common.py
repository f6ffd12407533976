# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Start-up and shutdown shared by the node executables."""

import sys
from typing import Callable, List, Optional, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node

from ..core.errors import PatchNetVLADError


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
