# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Start the graph as the launch file does: three node processes, and stop them.

``ros2 launch`` (launch_ros) is not installable beside the PyPI ROS wheels, so replay and
the soak benchmark start the three executables themselves, the way
launch/localize.launch.py does with ``one_process:=false``: one process per node, every
parameter at its default (config/localize.yaml holds the same values) unless named, in
a namespace of their own so that a live graph on the same ROS domain is never touched.
Each process logs to a file (a pipe nobody reads would block a chatty node).
"""

from dataclasses import dataclass, field
import os
from pathlib import Path
import signal
import subprocess
import sys
import tempfile
from typing import Any, Dict, List, Mapping, Optional

import yaml

#: The graph's nodes in pipeline order, with the module each executable runs.
NODES = {'camera_batcher': 'patch_netvlad_ros.nodes.camera_batcher',
         'descriptor_node': 'patch_netvlad_ros.nodes.descriptor_node',
         'localizer_node': 'patch_netvlad_ros.nodes.localizer_node'}


def format_param(name: str, value: Any) -> str:
    """Return a ``-p`` argument ``name:=value`` whose value rcl parses back to ``value``.

    rcl reads the value as YAML: strings that YAML would read as another type are quoted.
    """
    if isinstance(value, str):
        plain = value and yaml.safe_load(value) == value
        text = value if plain else yaml.safe_dump(value, default_style="'").strip()
    else:
        text = yaml.safe_dump(value, default_flow_style=True).strip()
        text = text.removesuffix('...').strip()  # the document end of a bare scalar
    return f'{name}:={text}'


def node_command(kind: str, params: Mapping[str, Any], namespace: str = '') -> List[str]:
    """Return the command line of one node process (python -m, --ros-args -p ...)."""
    cmd = [sys.executable, '-m', NODES[kind], '--ros-args']
    if namespace:
        cmd += ['-r', f'__ns:={namespace}']
    for name, value in params.items():
        cmd += ['-p', format_param(name, value)]
    return cmd


def rss_kib(pid: int) -> Optional[int]:
    """Return a process's resident set size (VmRSS of /proc/<pid>/status), KiB; None if gone."""
    try:
        with open(f'/proc/{pid}/status') as status:
            for line in status:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


@dataclass
class GraphProcesses:
    """The three node processes; :meth:`stop` interrupts them and returns their logs."""

    namespace: str
    procs: Dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: Dict[str, Path] = field(default_factory=dict)
    _tmp: Optional[tempfile.TemporaryDirectory] = None

    @classmethod
    def start(cls, params: Mapping[str, Mapping[str, Any]],
              namespace: str = '') -> 'GraphProcesses':
        """Start one process per node; params: node kind -> {parameter: value}."""
        graph = cls(namespace=namespace, _tmp=tempfile.TemporaryDirectory(prefix='pnv_graph_'))
        try:
            for kind in NODES:
                log = Path(graph._tmp.name) / f'{kind}.log'
                with open(log, 'w') as out:
                    graph.procs[kind] = subprocess.Popen(
                        node_command(kind, params.get(kind, {}), namespace), stdout=out,
                        stderr=subprocess.STDOUT, env=os.environ.copy())
                graph.logs[kind] = log
        except BaseException:
            graph.stop()
            raise
        return graph

    @property
    def pids(self) -> Dict[str, int]:
        """Return node kind -> process id."""
        return {kind: proc.pid for kind, proc in self.procs.items()}

    def exited(self) -> Dict[str, int]:
        """Return the processes that have exited: node kind -> exit status."""
        return {kind: proc.returncode for kind, proc in self.procs.items()
                if proc.poll() is not None}

    def read_logs(self) -> Dict[str, str]:
        """Return node kind -> its output so far."""
        return {kind: log.read_text(errors='replace') for kind, log in self.logs.items()
                if log.exists()}

    def stop(self, timeout: float = 30.0) -> Dict[str, str]:
        """Interrupt every process (SIGINT, as Ctrl-C; killed after ``timeout``); return logs."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        logs = self.read_logs()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        return logs
