# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Managed (lifecycle) nodes: configure loads, activate serves, autostart for plain runs.

:class:`ManagedNode` is an rclpy LifecycleNode (REP 2002 / nav2 style): the constructor
only declares parameters; ``on_configure`` runs the subclass's :meth:`configure` (model or
map loading, publishers and subscriptions), ``on_activate`` starts serving (lifecycle
publishers enabled, data callbacks answered), ``on_deactivate`` stops it (a callback in
flight finishes first: :attr:`work_lock`), ``on_cleanup`` and ``on_shutdown`` free what
configure made (:meth:`release`). A configure that fails (a bad parameter, a missing map)
logs the reason and returns FAILURE: the node stays unconfigured, its model and map
parameters can be set again (they are read-only only while configured), and a later
configure may succeed.

``autostart`` (default true, like nav2's lifecycle manager's) configures and activates
the node in its constructor, so `ros2 run`, the launch file and localize_graph run it as
before; a failed configure then raises its error, and the runner exits with status 2.
"""

from abc import ABCMeta, abstractmethod
import threading
from typing import Any, Optional, Sequence

from rclpy.duration import Duration
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from .params import declare, Param
from ..core.errors import PatchNetVLADError

AUTOSTART = Param('autostart', True, 'configure and activate at start-up (ros2 run, the '
                  'launch file, localize_graph); false: start unconfigured and wait for a '
                  'lifecycle manager (lifecycle_msgs ChangeState on ~/change_state), as '
                  'nav2 nodes do')

SUCCESS = TransitionCallbackReturn.SUCCESS
FAILURE = TransitionCallbackReturn.FAILURE
#: Seconds a publisher being destroyed waits for its reliable readers to acknowledge what
#: it sent (a batch finished during a stop reaches the subscribers, not the void).
FLUSH_SECONDS = 1.0


def destroy_endpoints(node: LifecycleNode, publishers: Sequence[Any],
                      subscriptions: Sequence[Any]) -> None:
    """Destroy a node's lifecycle publishers (each flushed first) and subscriptions."""
    for publisher in publishers:
        publisher.wait_for_all_acked(Duration(seconds=FLUSH_SECONDS))
        node.destroy_lifecycle_publisher(publisher)
    for subscription in subscriptions:
        node.destroy_subscription(subscription)


class ConfigureFailed(PatchNetVLADError):
    """A transition of the autostart failed (its reason was logged)."""


class ManagedNode(LifecycleNode, metaclass=ABCMeta):
    """A lifecycle node whose subclass implements :meth:`configure` and :meth:`release`.

    specs: the node's parameters, :data:`AUTOSTART` among them.

    Data callbacks hold :attr:`work_lock` while they work and return at once unless
    :attr:`active`; deactivate, cleanup and shutdown take the same lock, so nothing is
    published after they return and nothing is freed under a running callback.
    """

    def __init__(self, node_name: str, specs: Sequence[Param], **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.work_lock = threading.Lock()
        self.active = False
        self.configured = False
        self.configure_error: Optional[BaseException] = None
        self._autostarting = False
        self.params = declare(self, specs, locked=self._locked)

    def _locked(self) -> Optional[str]:
        """Why the read-only parameters cannot change now (None: unconfigured)."""
        return ('active' if self.active else 'inactive') if self.configured else None

    def autostart(self) -> None:
        """Configure and activate now if ``autostart`` (else log that the node waits).

        Raises the configure's error (a :class:`PatchNetVLADError` for bad parameters or
        input), or :class:`ConfigureFailed`.
        """
        if not self.params['autostart']:
            self.get_logger().info('unconfigured, waiting for a lifecycle manager (autostart '
                                   'false): configure, then activate')
            return
        self._autostarting = True
        try:
            if self.trigger_configure() != SUCCESS:
                raise self.configure_error or ConfigureFailed('configure failed')
            if self.trigger_activate() != SUCCESS:
                raise ConfigureFailed('activate failed')
        finally:
            self._autostarting = False

    # --- what subclasses implement ---------------------------------------------------

    @abstractmethod
    def configure(self) -> None:
        """Load and create what serving needs; raise PatchNetVLADError for bad input."""

    @abstractmethod
    def release(self) -> None:
        """Destroy and free what :meth:`configure` made (also after a partial configure)."""

    # --- transitions -----------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Run :meth:`configure`; on an error log it, free the partial state, FAILURE."""
        self.configure_error = None
        try:
            self.configure()
        except Exception as exc:  # noqa: B902 - any failure leaves the node unconfigured
            self.configure_error = exc
            if not self._autostarting:  # autostart raises it: the runner logs it
                what = '' if isinstance(exc, PatchNetVLADError) else \
                    f'internal error {type(exc).__name__}: '
                self.get_logger().error(f'configure failed: {what}{exc}')
            self._release()
            return FAILURE
        self.configured = True
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Enable the lifecycle publishers and answer data callbacks."""
        with self.work_lock:
            result = super().on_activate(state)
            self.active = result == SUCCESS
        if self.active and not self._autostarting:
            self.get_logger().info('active')
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop answering (after a callback in flight) and disable the publishers."""
        with self.work_lock:
            self.active = False
            result = super().on_deactivate(state)
        self.get_logger().info('inactive')
        return result

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free what configure made; the parameters may be set again."""
        self._release()
        self.get_logger().info('unconfigured')
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop and free everything (from any primary state)."""
        with self.work_lock:
            self.active = False
        self._release()
        return super().on_shutdown(state)

    def _release(self) -> None:
        with self.work_lock:
            self.active = False
            self.configured = False
            self.release()
