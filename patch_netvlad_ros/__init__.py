# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Patch-NetVLAD visual place recognition for ROS 2.

``core`` is ROS-free; ``ros`` and ``nodes`` hold the rclpy plumbing. The messages are the
package ``patch_netvlad_ros_interfaces`` (``from patch_netvlad_ros_interfaces.msg import
PlaceMatch``), built by rosidl: by ``colcon build`` in a workspace, by
scripts/build_interfaces.sh into the venv.
"""
