# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""ROS-free logic of the node graph.

Frame batching with back-pressure, frame accounting, and the camera frame size
limit.
"""
