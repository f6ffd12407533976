# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""A node executable run as its own process, for the tests of start-up, signals and lifecycle."""

import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import List, Optional

import pytest


class NodeProcess:
    """`python -m patch_netvlad_ros.nodes.<module> --ros-args ...`, its output collected.

    name: what failures call it (default: the module).
    """

    def __init__(self, module: str, *ros_args: str, name: Optional[str] = None) -> None:
        self.name = name or module
        env = {**os.environ, 'RCUTILS_LOGGING_BUFFERED_STREAM': '0', 'PYTHONUNBUFFERED': '1'}
        self.popen = subprocess.Popen(
            [sys.executable, '-m', f'patch_netvlad_ros.nodes.{module}', '--ros-args',
             *ros_args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: List[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._sent: Optional[float] = None
        self.stop_seconds: Optional[float] = None

    def _read(self) -> None:
        for line in self.popen.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return ''.join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 120.0) -> None:
        """Wait for a line matching ``pattern``; fail with the output if it never comes."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(re.search(pattern, line) for line in list(self.lines)):
                return
            if self.popen.poll() is not None:
                break
            time.sleep(0.02)
        self.kill()
        pytest.fail(f'{self.name}: no line matching {pattern!r} (exit {self.popen.returncode})'
                    f':\n{self.output}')

    def signal(self, signum: int) -> None:
        self._sent = time.monotonic()
        self.sent_wall = time.time()
        self.popen.send_signal(signum)

    def logged_at(self, pattern: str) -> float:
        """Wall time (from the log line's stamp) of the first line matching ``pattern``."""
        for line in self.lines:
            if re.search(pattern, line):
                return float(re.search(r'\[(\d+\.\d+)\]', line).group(1))
        raise AssertionError(f'{self.name}: no line matching {pattern!r}:\n{self.output}')

    def wait(self, timeout: float = 60.0) -> int:
        """Wait for the exit (killed after ``timeout``); stop_seconds: since the signal."""
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        if self._sent is not None:
            self.stop_seconds = time.monotonic() - self._sent
        self._reader.join(5)
        return self.popen.returncode

    def stop(self) -> int:
        """SIGINT (Ctrl-C) if it runs; the exit status (killed after 60 s)."""
        if self.popen.poll() is None:
            self.signal(signal.SIGINT)
        return self.wait(60.0)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
