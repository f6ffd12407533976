# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Python packaging of patch_netvlad_ros (pip, and ament_cmake_python in a workspace)."""

from glob import glob
import os

from setuptools import find_packages, setup

PACKAGE = 'patch_netvlad_ros'


def package_data():
    """Demo data and the C helpers' sources and header, relative to the package folder."""
    root = os.path.join(PACKAGE, 'data')
    files = glob(os.path.join(root, '**', '*'), recursive=True)
    files += glob(os.path.join(PACKAGE, 'core', 'native', '*.[ch]'))
    return [os.path.relpath(p, PACKAGE) for p in files if os.path.isfile(p)]


setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*', 'benchmarks', 'benchmarks.*']),
    package_data={PACKAGE: package_data()},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        ('share/' + PACKAGE + '/launch', glob('launch/*.launch.py')),
        ('share/' + PACKAGE + '/config', glob('config/*.yaml')),
    ],
    install_requires=['numpy', 'torch', 'torchvision', 'opencv-python-headless', 'faiss-cpu',
                      'onnx', 'tqdm', 'matplotlib', 'pyyaml'],
    zip_safe=False,
    maintainer='patch_netvlad_ros maintainers',
    maintainer_email='maintainers@patch-netvlad-ros.org',
    description='Patch-NetVLAD visual place recognition localizer for ROS 2',
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'pnv-demo = patch_netvlad_ros.cli.demo:main',
            'pnv-bootstrap = patch_netvlad_ros.cli.bootstrap:main',
            'pnv-build-map = patch_netvlad_ros.cli.build_map:main',
            'pnv-evaluate = patch_netvlad_ros.cli.evaluate:main',
            'pnv-train = patch_netvlad_ros.cli.train:main',
            'pnv-map = patch_netvlad_ros.cli.map_tool:main',
            # The graph's executables; the same names as `ros2 run` and the launch file use.
            'camera_batcher = patch_netvlad_ros.nodes.camera_batcher:main',
            'descriptor_node = patch_netvlad_ros.nodes.descriptor_node:main',
            'localizer_node = patch_netvlad_ros.nodes.localizer_node:main',
            'localize_graph = patch_netvlad_ros.nodes.graph:main',
        ],
    },
)
