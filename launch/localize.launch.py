# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Launch the Patch-NetVLAD localizer: camera_batcher, descriptor_node and localizer_node.

    ros2 launch patch_netvlad_ros localize.launch.py map:=/path/to/map
    ros2 launch patch_netvlad_ros localize.launch.py map:=/path/to/map one_process:=true
    ros2 launch patch_netvlad_ros localize.launch.py map:=/path/to/map odom_topic:=/odom
    ros2 launch patch_netvlad_ros localize.launch.py map:=/path/to/map \
        camera_topic:=/camera/image_raw

Parameters come from ``params_file`` (config/localize.yaml: every parameter, documented);
the launch arguments below override the ones they name. ``one_process:=true`` runs the
three nodes in one process (the ``localize_graph`` executable) instead of three.

``map`` feeds all three nodes: localizer_node loads the map, descriptor_node runs the model
the map keeps (``<map>/model.pth.tar``) at the map's preset and image size, and
camera_batcher resizes frames to that size. ``preset``, ``image_width`` and
``image_height`` may stay unset ('', 0); when set they must be the map's.
The camera topic is ``image_raw`` in the nodes' namespace, as in image_pipeline (the
same default as config/localize.yaml); ``camera_topic`` points it elsewhere.
descriptor_node and localizer_node are lifecycle nodes that configure and activate
themselves (``autostart`` in the parameters file; false hands them to a lifecycle
manager). ``odom_topic`` gives localizer_node's sequence filter the robot's odometry (otherwise it
moves by time and max_speed); ``sequence:=false`` answers each frame on its own.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

PACKAGE = 'patch_netvlad_ros'


def generate_launch_description():
    """Declare the arguments and start the three nodes (or localize_graph)."""
    namespace = LaunchConfiguration('namespace')
    params_file = LaunchConfiguration('params_file')
    one_process = LaunchConfiguration('one_process')
    log_level = LaunchConfiguration('log_level')

    arguments = [
        DeclareLaunchArgument(
            'map', default_value='',
            description='map database folder (built by the demo or build-map; it keeps its '
                        'model, preset and image size); required'),
        DeclareLaunchArgument(
            'checkpoint', default_value='',
            description="model checkpoint (*.pth.tar, authors' layout); empty: the map's "
                        'own model.pth.tar (a checkpoint must be the model the map was built '
                        'with)'),
        DeclareLaunchArgument(
            'preset', default_value='', choices=['', 'performance', 'speed', 'storage'],
            description="Patch-NetVLAD preset (empty: the map's; if set, the map's)"),
        DeclareLaunchArgument(
            'image_width', default_value='0',
            description="network input width in px (0: the map's; if set, the map's)"),
        DeclareLaunchArgument(
            'image_height', default_value='0',
            description="network input height in px (0: the map's; if set, the map's)"),
        DeclareLaunchArgument(
            'camera_topic', default_value='image_raw',
            description='camera image topic: relative names follow the namespace (the '
                        "default 'image_raw', as image_pipeline's nodes); point it at a "
                        'camera with camera_topic:=/camera/image_raw (raw and compressed), '
                        "or remap the default, e.g. ros2 run's --ros-args -r "
                        'image_raw:=/camera/image_raw (raw transport only)'),
        DeclareLaunchArgument(
            'transport', default_value='raw', choices=['raw', 'compressed'],
            description="'raw': sensor_msgs/Image on camera_topic; 'compressed': "
                        'sensor_msgs/CompressedImage on <camera_topic>/compressed'),
        DeclareLaunchArgument(
            'device', default_value='auto', choices=['auto', 'cuda', 'cpu'],
            description="where the network runs and the rerank keeps the map: 'auto' (CUDA "
                        "when available, else CPU), 'cuda' or 'cpu'"),
        DeclareLaunchArgument(
            'precision', default_value='fp32', choices=['fp32', 'fp16', 'bf16'],
            description='backbone precision (fp16 needs CUDA)'),
        DeclareLaunchArgument(
            'odom_topic', default_value='',
            description="nav_msgs/Odometry topic for localizer_node's sequence filter "
                        '(empty: none, the filter moves by time and max_speed)'),
        DeclareLaunchArgument(
            'sequence', default_value='true',
            description='localizer_node filters the frames in order (~/pose carries the '
                        "filter's place) if true; each frame on its own if false"),
        DeclareLaunchArgument(
            'use_sim_time', default_value='false',
            description='use the /clock topic (simulation or bag playback) if true'),
        DeclareLaunchArgument(
            'namespace', default_value='',
            description='namespace of the nodes'),
        DeclareLaunchArgument(
            'params_file',
            default_value=PathJoinSubstitution([FindPackageShare(PACKAGE), 'config',
                                                'localize.yaml']),
            description='ROS 2 parameters file of the three nodes'),
        DeclareLaunchArgument(
            'one_process', default_value='false',
            description='run the three nodes in one process (localize_graph) if true'),
        DeclareLaunchArgument(
            'log_level', default_value='info',
            description='log level (debug, info, warn, error, fatal)'),
    ]

    # Overrides from the launch arguments; they follow params_file, so they take precedence.
    # ROS parameters are typed: ParameterValue gives each one the type its node declares.
    common = {
        'use_sim_time': ParameterValue(LaunchConfiguration('use_sim_time'), value_type=bool),
    }
    # The map, and the network size taken from it (camera_batcher and descriptor_node).
    network = {
        'map_path': ParameterValue(LaunchConfiguration('map'), value_type=str),
        'preset': ParameterValue(LaunchConfiguration('preset'), value_type=str),
        'image_width': ParameterValue(LaunchConfiguration('image_width'), value_type=int),
        'image_height': ParameterValue(LaunchConfiguration('image_height'), value_type=int),
    }
    camera_batcher = {
        'image_topic': ParameterValue(LaunchConfiguration('camera_topic'), value_type=str),
        'transport': ParameterValue(LaunchConfiguration('transport'), value_type=str),
        **network,
    }
    descriptor_node = {
        'checkpoint': ParameterValue(LaunchConfiguration('checkpoint'), value_type=str),
        'device': ParameterValue(LaunchConfiguration('device'), value_type=str),
        'precision': ParameterValue(LaunchConfiguration('precision'), value_type=str),
        **network,
    }
    localizer_node = {
        'map_path': ParameterValue(LaunchConfiguration('map'), value_type=str),
        'device': ParameterValue(LaunchConfiguration('device'), value_type=str),
        'odom_topic': ParameterValue(LaunchConfiguration('odom_topic'), value_type=str),
        'sequence': ParameterValue(LaunchConfiguration('sequence'), value_type=bool),
    }
    ros_arguments = ['--ros-args', '--log-level', log_level]

    nodes = [
        Node(package=PACKAGE, executable='camera_batcher', name='camera_batcher',
             namespace=namespace, parameters=[params_file, common, camera_batcher],
             arguments=ros_arguments, output='screen',
             condition=UnlessCondition(one_process)),
        Node(package=PACKAGE, executable='descriptor_node', name='descriptor_node',
             namespace=namespace, parameters=[params_file, common, descriptor_node],
             arguments=ros_arguments, output='screen',
             condition=UnlessCondition(one_process)),
        Node(package=PACKAGE, executable='localizer_node', name='localizer_node',
             namespace=namespace, parameters=[params_file, common, localizer_node],
             arguments=ros_arguments, output='screen',
             condition=UnlessCondition(one_process)),
        # One process, three nodes: no name here (it would rename all three). The dicts go
        # to every node of the process; each node reads only the parameters it declares.
        Node(package=PACKAGE, executable='localize_graph',
             namespace=namespace,
             parameters=[params_file, common, camera_batcher, descriptor_node, localizer_node],
             arguments=ros_arguments, output='screen',
             condition=IfCondition(one_process)),
    ]

    return LaunchDescription(arguments + nodes)
