# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""localize_graph: camera_batcher, descriptor_node and localizer_node in one process.

Python has no composable nodes; this runs the three on one pool of callback threads (each
node's work in its own callback group; see :class:`.common.CallbackPool`), so patches can
skip the message (descriptor_node patch_transport 'shared'). Parameters come as for
separate nodes: ``--ros-args --params-file config/localize.yaml`` (node-name sections) and
``-p`` / remapping rules; ``-p map_path:=...`` reaches all three, so the model, preset and
size come from the map. This is the way to run the graph without the `ros2` CLI.
"""

import sys
from typing import List, Optional

from .camera_batcher import CameraBatcher
from .common import run_nodes
from .descriptor_node import DescriptorNode
from .localizer_node import LocalizerNode

NODES = (CameraBatcher, DescriptorNode, LocalizerNode)


def main(args: Optional[List[str]] = None) -> int:
    """Run the three nodes in this process until Ctrl-C; returns the exit status."""
    return run_nodes(NODES, sys.argv if args is None else args)


if __name__ == '__main__':
    sys.exit(main())
