# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Start-up, network size and shutdown shared by the node executables.

Stopping: rclpy.init's own signal handlers only shut the context down, which a node still
loading a model or a map in its constructor never notices (and what it creates afterwards
fails with "publisher's context is invalid"). The executables therefore install their own
SIGINT/SIGTERM handlers (rclpy's are not installed): during start-up the first signal
raises :class:`StopRequested` in the main thread, between two Python bytecodes or torch
ops, so loading stops at once; while running it only asks the spin loop to stop, which
then lets callbacks in flight finish (at most :data:`STOP_GRACE_S`, else the process
exits without them), destroys the nodes and shuts the context down, once. The callbacks
run on :class:`CallbackPool`, whose stop is safe while they run. Exit status: 0 for a
stop while running, 128 + the signal number (130 SIGINT, 143 SIGTERM) for a stop during
start-up, 2 when a node refused to start. A signal during the interpreter's own start
(imports, before ``main``) gets Python's default handling.
"""

from concurrent.futures import Future, ThreadPoolExecutor, wait as futures_wait
import os
import signal
import sys
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import rclpy
from rclpy.executors import (ConditionReachedException, ExternalShutdownException,
                             ShutdownException, SingleThreadedExecutor, TimeoutException)
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from ..core.config import DEFAULT_PRESET, get_config
from ..core.errors import PatchNetVLADError
from ..core.maps.models import map_model_info, MapModelInfo
from ..ros.params import ParameterError

#: Seconds callbacks in flight get to finish after a stop; then the process exits anyway.
STOP_GRACE_S = 3.0
#: Seconds between checks for a stop while spinning (the longest a stop waits to be seen).
POLL_S = 0.1
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def network_config(p: Dict[str, Any]) -> Tuple[Any, Optional[MapModelInfo]]:
    """Return the network's configuration and the map's model info (None without a map).

    p: a node's parameters ``map_path``, ``preset``, ``image_width``, ``image_height``.
    With a map the configuration is the map's; a preset or size that is set must agree
    with it (ParameterError naming both values). Without one, the preset (empty: the
    default preset) and the sizes that are set (0: the preset's).
    """
    if p['map_path']:
        info = map_model_info(p['map_path'])
        for name, unset in (('preset', ''), ('image_width', 0), ('image_height', 0)):
            theirs = getattr(info.config, name)
            if p[name] != unset and p[name] != theirs:
                raise ParameterError(
                    f"parameter '{name}' = {p[name]!r}, but the map {p['map_path']} was built "
                    f'with {name} {theirs!r}: leave it unset ({unset!r}) to take the '
                    f"map's, or set {theirs!r}")
        return info.config, info
    sizes = {k: p[k] for k in ('image_width', 'image_height') if p[k]}
    return get_config(p['preset'] or DEFAULT_PRESET, **sizes), None


class StopRequested(BaseException):
    """SIGINT or SIGTERM arrived during start-up (not an Exception: nothing swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """SIGINT/SIGTERM handlers of an executable (main thread), restored on exit.

    Until :meth:`running` the first signal raises :class:`StopRequested`; afterwards
    signals only set :attr:`signum`, which the spin loop polls.
    """

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._raise = True
        self._previous: Dict[int, Any] = {}

    def __enter__(self) -> 'StopSignals':
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            return  # already stopping
        self.signum = signum
        if self._raise:
            self._raise = False
            raise StopRequested(signum)

    def running(self) -> None:
        """Start-up is over: from now on a signal only asks the spin loop to stop."""
        self._raise = False

    @property
    def requested(self) -> bool:
        """Whether a stop signal arrived."""
        return self.signum is not None


def start_nodes(factories: Sequence[Callable[[], Node]]) -> List[Node]:
    """Construct nodes; on a bad parameter, input or a stop destroy those made and re-raise."""
    nodes: List[Node] = []
    try:
        for make in factories:
            nodes.append(make())
    except BaseException:
        for node in nodes:
            node.destroy_node()
        raise
    return nodes


class CallbackPool:
    """The nodes' callbacks on a pool of threads, like MultiThreadedExecutor, stoppable.

    Ready callbacks come from an executor's public wait_for_ready_callbacks (callback
    groups apply as on any executor) and run on this pool, whose futures are kept here:
    :meth:`stop` drops the queued ones and waits for those running, before the executor
    is shut down. (MultiThreadedExecutor.shutdown destroys the guard condition that
    callbacks still running trigger, which makes them fail.)
    """

    def __init__(self, nodes: Sequence[Node], threads: Optional[int] = None) -> None:
        self.executor = SingleThreadedExecutor()
        for node in nodes:
            self.executor.add_node(node)
        threads = threads or max(2, len(os.sched_getaffinity(0)))
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix='callbacks')
        self.running: Dict[Future, Any] = {}   # pool future -> rclpy handler task

    def _next(self):
        """Return the next ready callback's task, or None after POLL_S without one."""
        try:
            handler, _, _ = self.executor.wait_for_ready_callbacks(timeout_sec=POLL_S)
        except (TimeoutException, ShutdownException, ConditionReachedException):
            return None
        return handler

    def spin_once(self) -> None:
        """Start the next ready callback (wait at most POLL_S); raise a failed one's."""
        handler = self._next()
        if handler is not None:
            self.running[self.pool.submit(self._call, handler)] = handler
        for future in [f for f in self.running if f.done()]:
            del self.running[future]
            future.result()  # a callback's exception is a bug: let it out

    @staticmethod
    def _call(handler) -> None:
        handler()
        exception = handler.exception()
        if exception is not None:
            raise exception

    def stop(self, grace: float) -> bool:
        """Start no more callbacks, wait up to ``grace`` s for those running; shut down.

        Returns False (nothing shut down) when a callback is still running then.
        """
        # Tasks made for ready callbacks and not started yet are cancelled (their
        # coroutines closed): those the executor still holds, then those queued here. An
        # entity with a task does not come back, so the first wait with none ends this.
        try:
            handler = self._next()
            while handler is not None:
                handler.cancel()
                handler = self._next()
        except ExternalShutdownException:
            pass  # the context is gone: nothing more comes
        self.pool.shutdown(wait=False, cancel_futures=True)
        for future, handler in self.running.items():
            if future.cancelled():
                handler.cancel()  # closes its coroutine, which never started
        # Only those running: futures_wait would take the cancelled ones for pending.
        _, running = futures_wait([f for f in self.running if not f.done()], timeout=grace)
        if running:
            return False
        self.executor.shutdown()
        return True


def _spin(nodes: Sequence[Node], stop: StopSignals, threads: Optional[int]) -> bool:
    """Spin until a stop; return False if a callback outlived the grace period."""
    log = rclpy.logging.get_logger('patch_netvlad_ros')
    callbacks = CallbackPool(nodes, threads)
    try:
        # A Python signal handler runs only when the main thread executes bytecode: wait
        # for ready callbacks in short steps rather than block in rcl_wait.
        while not stop.requested:
            callbacks.spin_once()
    except ExternalShutdownException:
        pass  # the context was shut down by someone else
    finally:
        if stop.requested:
            log.info(f'{signal.Signals(stop.signum).name} received: stopping')
        # Callbacks in flight finish and publish on a live context first.
        finished = callbacks.stop(STOP_GRACE_S)
        if finished:
            for node in nodes:
                node.destroy_node()
        else:
            log.warning(f'a callback is still running {STOP_GRACE_S:.0f} s after the stop: '
                        'exiting without waiting for it')
    return finished


def run_nodes(factories: Sequence[Callable[[], Node]], args: Optional[List[str]] = None,
              threads: Optional[int] = None) -> int:
    """rclpy.init, build the nodes, run their callbacks on a thread pool, shut down.

    Returns the exit status (see the module docstring): 0 after a stop while running,
    128 + signal number after a stop during start-up, 2 when a node refused to start (bad
    parameter, missing checkpoint or map); the reason is logged.
    """
    log = rclpy.logging.get_logger('patch_netvlad_ros')
    with StopSignals() as stop:
        try:
            rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
            try:
                try:
                    nodes = start_nodes(factories)
                finally:
                    stop.running()   # a signal from here on stops the spin loop (status 0)
            except PatchNetVLADError as exc:
                log.fatal(f'cannot start: {exc}')
                return 2
            if not _spin(nodes, stop, threads):
                # The busy thread would keep the interpreter alive, and publish on a
                # context shut down under it: leave now, without either.
                log.info('stopped')
                _hard_exit(0)
            return 0
        except StopRequested as exc:
            stop.running()
            log.info(f'{exc} received during start-up: stopping')
            return 128 + exc.signum
        finally:
            if rclpy.ok():
                rclpy.shutdown()
            if stop.requested:
                # What is left is the interpreter's own exit (about 1 s for torch).
                log.info('stopped')


def _hard_exit(status: int) -> None:
    """Exit now, without joining threads still running a callback."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def run_node(node_class: Callable[..., Node], args: Optional[List[str]] = None) -> int:
    """Run one node (console scripts and `ros2 run`)."""
    return run_nodes([node_class], sys.argv if args is None else args)
