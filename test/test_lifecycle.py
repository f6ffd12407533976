# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""descriptor_node and localizer_node as lifecycle nodes, driven over real DDS.

Each node runs as its own process (``autostart:=false``, as under a lifecycle manager)
on a real corridor map; the test is the manager: lifecycle_msgs ChangeState / GetState and
rcl_interfaces SetParameters service calls, plus a probe that feeds real frames and
records every message the node publishes. Checked: a configure with a bad map fails with
the reason logged and leaves the node unconfigured; the map parameter can then be fixed
and configure succeeds; the parameter is read-only while configured; nothing is
published before activate or after deactivate; cleanup removes the node's topics; a
shutdown finalizes it; SIGINT still ends the process with status 0.
"""

import re
import shutil
import time
from typing import Callable, List

from geometry_msgs.msg import PoseWithCovarianceStamped
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from node_process import NodeProcess
from patch_netvlad_ros_interfaces.msg import ImageBatch, PlaceDescriptors, PlaceMatch
import pytest
from rcl_interfaces.msg import Parameter as ParameterMsg, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
import rclpy
from rclpy.node import Node
from ros_spinner import Spinner
from std_msgs.msg import Header, UInt64

from patch_netvlad_ros.core.maps.map_building import map_model_path
from patch_netvlad_ros.core.model.image import load_image
from patch_netvlad_ros.ros.conversions import descriptors_to_msg, rgb_to_image
from patch_netvlad_ros.ros.qos import pipeline_qos

pytestmark = pytest.mark.ros

#: Seconds a node has to show that it publishes nothing (it answers within 1 s when active).
QUIET_S = 2.0


class Manager(Spinner):
    """A lifecycle manager and probe node of the test's own context, spinning in a thread."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.probe = Node('lifecycle_manager', context=self.context)
        self.change = self.probe.create_client(ChangeState, f'{node}/change_state')
        self.get = self.probe.create_client(GetState, f'{node}/get_state')
        self.set = self.probe.create_client(SetParameters, f'{node}/set_parameters')
        super().__init__(self.context, [self.probe], threads=2)

    def call(self, client, request, timeout: float = 120.0):
        assert client.wait_for_service(timeout_sec=60.0), f'no service {client.srv_name}'
        future = client.call_async(request)
        assert self.wait(future.done, timeout), f'{client.srv_name}: no answer'
        return future.result()

    def transition(self, transition_id: int) -> bool:
        return self.call(self.change, ChangeState.Request(
            transition=Transition(id=transition_id))).success

    def state(self) -> str:
        """The node's state label; GetState asked again when an answer is lost.

        A service can be discovered before its response writer has matched this client's
        reader: the first answer may never arrive (a DDS race, seen once in CI). Asking the
        state is idempotent, so it is asked again (a transition never is).
        """
        assert self.get.wait_for_service(timeout_sec=60.0), f'no service {self.get.srv_name}'
        for _ in range(8):
            future = self.get.call_async(GetState.Request())
            if self.wait(future.done, 15.0):
                return future.result().current_state.label
            self.get.remove_pending_request(future)
        raise AssertionError(f'{self.get.srv_name}: no answer in 8 tries of 15 s')

    def set_string(self, name: str, value: str):
        """SetParameters of one string parameter: its SetParametersResult."""
        msg = ParameterMsg(name=name, value=ParameterValue(type=ParameterType.PARAMETER_STRING,
                                                           string_value=value))
        [result] = self.call(self.set, SetParameters.Request(parameters=[msg])).results
        return result

    def publishers(self, topic: str) -> int:
        return self.probe.count_publishers(topic)

    def close(self) -> None:
        """Stop spinning, destroy the probe and shut the context down."""
        super().close()
        self.context.try_shutdown()


def drive_lifecycle(manager: Manager, proc: NodeProcess, good_map: str, bad_map: str,
                    outputs: List[str], send: Callable[[], None], received: Callable[[], int],
                    per_send: int) -> None:
    """Configure (bad map, then the good one), activate, deactivate, cleanup, shutdown.

    outputs: the node's topics; send(): feed it one input; received(): messages the probe
    got on them so far; per_send: messages an active node answers one input with.
    """
    assert manager.state() == 'unconfigured'
    assert all(manager.publishers(t) == 0 for t in outputs), 'topics before configure'

    assert not manager.transition(Transition.TRANSITION_CONFIGURE)
    assert manager.state() == 'unconfigured'
    assert re.search(rf'configure failed: .*{re.escape(bad_map)}', proc.output), proc.output

    result = manager.set_string('map_path', good_map)
    assert result.successful, result.reason
    assert manager.transition(Transition.TRANSITION_CONFIGURE), proc.output
    assert manager.state() == 'inactive'
    # Configured, the map may not change under the node.
    result = manager.set_string('map_path', bad_map)
    assert not result.successful
    assert "'map_path' is read-only while the node is inactive" in result.reason

    assert manager.wait(lambda: all(manager.publishers(t) > 0 for t in outputs), 30)
    send()
    time.sleep(QUIET_S)
    assert received() == 0, 'published while inactive'

    assert manager.transition(Transition.TRANSITION_ACTIVATE)
    assert manager.state() == 'active'
    send()
    assert manager.wait(lambda: received() >= per_send, 60), proc.output
    time.sleep(0.3)
    assert received() == per_send

    assert manager.transition(Transition.TRANSITION_DEACTIVATE)
    assert manager.state() == 'inactive'
    send()
    time.sleep(QUIET_S)
    assert received() == per_send, 'published after deactivate'

    assert manager.transition(Transition.TRANSITION_CLEANUP)
    assert manager.state() == 'unconfigured'
    assert manager.wait(lambda: all(manager.publishers(t) == 0 for t in outputs), 30)
    assert manager.set_string('map_path', good_map).successful   # settable again

    assert manager.transition(Transition.TRANSITION_CONFIGURE)
    assert manager.transition(Transition.TRANSITION_INACTIVE_SHUTDOWN)
    assert manager.state() == 'finalized'
    assert proc.popen.poll() is None, 'a finalized node stays up until stopped'


def test_localizer_node_lifecycle(small_map_dir, corridor_map, corridor_query_descriptors,
                                  tmp_path):
    """localizer_node: a missing map fails configure; the right one serves only when active."""
    ns = '/lc_localizer'
    bad = str(tmp_path / 'no_such_map')
    proc = NodeProcess('localizer_node', '-r', f'__ns:={ns}', '-p', 'autostart:=false',
                       '-p', f'map_path:={bad}', '-p', 'verify_map:=false')
    manager = Manager(f'{ns}/localizer_node')
    got: List = []
    try:
        manager.probe.create_subscription(PlaceMatch, f'{ns}/localizer_node/match',
                                          got.append, 100)
        manager.probe.create_subscription(PoseWithCovarianceStamped,
                                          f'{ns}/localizer_node/pose', got.append, 100)
        pub = manager.probe.create_publisher(PlaceDescriptors, f'{ns}/place_descriptors', 10)
        g, patches = corridor_query_descriptors
        sent = [0]

        def send() -> None:
            assert manager.wait(lambda: pub.get_subscription_count() > 0, 30)
            header = Header(frame_id='camera')
            header.stamp.sec = 100 + sent[0]
            i = 5 + sent[0]
            sent[0] += 1
            pub.publish(descriptors_to_msg(header, corridor_map.config,
                                           corridor_map.model_digest, g[i],
                                           [p[i] for p in patches]))

        drive_lifecycle(manager, proc, str(small_map_dir), bad,
                        [f'{ns}/localizer_node/match', f'{ns}/localizer_node/pose'],
                        send, lambda: len(got), per_send=2)   # ~/match and ~/pose
    finally:
        manager.close()
        status = proc.stop()
    assert status == 0, proc.output
    assert 'Traceback' not in proc.output, proc.output


def test_descriptor_node_lifecycle(small_map_dir, corridor_set, tmp_path):
    """descriptor_node: a map without its model fails configure; with it, serves when active."""
    ns = '/lc_descriptor'
    bad = tmp_path / 'map_without_model'
    shutil.copytree(small_map_dir, bad)
    map_model_path(bad).unlink()
    proc = NodeProcess('descriptor_node', '-r', f'__ns:={ns}', '-p', 'autostart:=false',
                       '-p', f'map_path:={bad}')
    manager = Manager(f'{ns}/descriptor_node')
    got: List = []
    try:
        manager.probe.create_subscription(PlaceDescriptors, f'{ns}/place_descriptors',
                                          got.append, pipeline_qos(100))
        manager.probe.create_subscription(UInt64, f'{ns}/image_batch_ack', got.append,
                                          pipeline_qos(10))
        pub = manager.probe.create_publisher(ImageBatch, f'{ns}/image_batch', pipeline_qos(4))
        rgb = load_image(corridor_set.queries[20])
        sequence = [0]

        def send() -> None:
            assert manager.wait(lambda: pub.get_subscription_count() > 0, 30)
            sequence[0] += 1
            header = Header(frame_id='camera')
            header.stamp.sec = sequence[0]
            pub.publish(ImageBatch(images=[rgb_to_image(rgb, header)], sequence=sequence[0]))

        drive_lifecycle(manager, proc, str(small_map_dir), str(bad),
                        [f'{ns}/place_descriptors', f'{ns}/image_batch_ack'],
                        send, lambda: len(got), per_send=2)   # descriptors and the ack
    finally:
        manager.close()
        status = proc.stop()
    assert status == 0, proc.output
    assert 'Traceback' not in proc.output, proc.output
