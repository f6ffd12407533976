# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The DDS tests' harness: rclpy nodes spinning in a thread, and waiting on them."""

import threading
import time
from typing import Callable, Sequence

from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node


class Spinner:
    """Nodes spinning on one MultiThreadedExecutor in a daemon thread.

    Subclasses create their probe node, publishers and subscriptions first, then call
    ``Spinner.__init__`` with every node to spin; :meth:`close` stops and destroys them.
    """

    def __init__(self, context, nodes: Sequence[Node], threads: int) -> None:
        self.spun = list(nodes)
        self.executor = MultiThreadedExecutor(num_threads=threads, context=context)
        for node in self.spun:
            self.executor.add_node(node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def wait(self, done: Callable[[], bool], timeout: float, poll: float = 0.02) -> bool:
        """Wait until ``done()`` or the timeout (s); return done()."""
        end = time.monotonic() + timeout
        while time.monotonic() < end and not done():
            time.sleep(poll)
        return done()

    def close(self) -> None:
        """Stop spinning and destroy the spun nodes."""
        self.executor.shutdown()
        self.thread.join(timeout=10)
        for node in self.spun:
            node.destroy_node()
