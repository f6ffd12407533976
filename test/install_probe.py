# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""What test_workspace_install.py runs in a fresh interpreter with a colcon install sourced.

Reports as JSON (--out): where the packages, the messages and the C helpers were loaded
from; a PlaceMatch published and received over DDS; and the PlaceDescriptors that a
running descriptor_node (namespace --ns) answers to one ImageBatch of --image (an RGB
.npy). Not a test module itself (no test_ prefix): the test runs it as a script.
"""

import argparse
import json
from pathlib import Path
import threading
import time
from typing import Callable, Dict, List

import numpy as np


def _until(done: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and not done():
        time.sleep(0.02)
    return done()


def main() -> None:
    """Probe the install; write the report to --out."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--ns', required=True)
    parser.add_argument('--image', type=Path, required=True)
    parser.add_argument('--out', type=Path, required=True)
    args = parser.parse_args()

    import patch_netvlad_ros
    from patch_netvlad_ros.core import native
    from patch_netvlad_ros.ros.conversions import rgb_to_image
    from patch_netvlad_ros.ros.qos import pipeline_qos
    import patch_netvlad_ros_interfaces.msg as msgs
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import Header

    report: Dict = {'package': patch_netvlad_ros.__file__, 'messages': msgs.__file__,
                    'native': {name: [str(native.library_path(name)),
                                      native.unavailable_reason(name)]
                               for name in native.SOURCES}}
    rclpy.init()
    node = rclpy.create_node('install_probe', namespace=args.ns)
    matches: List = []
    answers: List = []
    node.create_subscription(msgs.PlaceMatch, 'round_trip', matches.append, 10)
    match_pub = node.create_publisher(msgs.PlaceMatch, 'round_trip', 10)
    node.create_subscription(msgs.PlaceDescriptors, 'place_descriptors', answers.append,
                             pipeline_qos(10))
    batch_pub = node.create_publisher(msgs.ImageBatch, 'image_batch', pipeline_qos(4))
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    try:
        sent = msgs.PlaceMatch(best_reference_id='r7', confidence=0.25, pose_published=True)
        sent.candidates.append(msgs.MatchCandidate(reference_id='r7', map_index=7))
        sent.header.frame_id = 'map'
        _until(lambda: match_pub.get_subscription_count() > 0, 10)
        match_pub.publish(sent)
        _until(lambda: bool(matches), 10)
        if matches:
            got = matches[0]
            report['round_trip'] = [got.header.frame_id, got.best_reference_id, got.confidence,
                                    got.pose_published, got.candidates[0].reference_id,
                                    got.candidates[0].map_index]
        # descriptor_node loads torch, the model and the map first: up to a minute here
        report['node_found'] = _until(lambda: batch_pub.get_subscription_count() > 0
                                      and node.count_publishers(
                                          f'{args.ns}/place_descriptors') > 0, 120)
        header = Header(frame_id='camera')
        header.stamp.sec = 7
        batch_pub.publish(msgs.ImageBatch(images=[rgb_to_image(np.load(args.image), header)],
                                          sequence=1))
        if _until(lambda: bool(answers), 90):
            answer = answers[0]
            report['answer'] = {'stamp': answer.header.stamp.sec, 'digest': answer.model_digest,
                                'global': np.asarray(answer.global_descriptor).tolist()}
        maps = Path('/proc/self/maps')
        report['libraries'] = sorted({line.split()[-1] for line in
                                      (maps.read_text().splitlines() if maps.exists() else [])
                                      if 'patch_netvlad_ros' in line and line.endswith('.so')})
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    args.out.write_text(json.dumps(report))


if __name__ == '__main__':
    main()
