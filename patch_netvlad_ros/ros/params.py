# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Node parameters: declared with descriptors, validated once at start-up.

Each node lists :class:`Param` specs; :func:`declare` declares them all (description,
ranges, allowed values, read-only where a change needs a restart) and returns the values
as a plain dict, or raises :class:`ParameterError` naming the parameter, the value and
what is allowed. Nodes read the dict; they never query parameters inside callbacks.
For a lifecycle node, "a restart" is cleanup and configure again: given ``locked``, the
read-only parameters may change while ``locked()`` returns None (the node unconfigured),
and are refused with its reason otherwise.
"""

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.exceptions import InvalidParameterTypeException
from rclpy.node import Node
from rclpy.parameter import Parameter
import torch

from ..core.errors import ConfigError


class ParameterError(ConfigError):
    """A parameter value that the node cannot run with."""


@dataclass(frozen=True)
class Param:
    """One parameter: name, default (its type is the parameter type), documentation."""

    name: str
    default: Any
    description: str
    choices: Optional[Sequence[Any]] = None
    low: Optional[float] = None
    high: Optional[float] = None
    read_only: bool = True
    check: Optional[Callable[[Any], Optional[str]]] = None  # returns an error or None

    def descriptor(self, lifecycle: bool = False) -> ParameterDescriptor:
        """Build the rcl descriptor advertised to `ros2 param describe`.

        lifecycle: a read-only parameter of a lifecycle node is writable while the node is
        unconfigured (:func:`declare`'s ``locked`` enforces that), and says so.
        """
        text = self.description
        if self.choices is not None:
            text += f' (one of: {", ".join(map(str, self.choices))})'
        if lifecycle and self.read_only:
            text += ' (set while the node is unconfigured)'
        desc = ParameterDescriptor(description=text,
                                   read_only=self.read_only and not lifecycle)
        if self.low is not None or self.high is not None:
            if isinstance(self.default, bool):
                pass
            elif isinstance(self.default, int):
                desc.integer_range = [IntegerRange(
                    from_value=int(self.low if self.low is not None else -2 ** 31),
                    to_value=int(self.high if self.high is not None else 2 ** 31 - 1), step=0)]
            elif isinstance(self.default, float):
                desc.floating_point_range = [FloatingPointRange(
                    from_value=float(self.low if self.low is not None else -1e300),
                    to_value=float(self.high if self.high is not None else 1e300), step=0.0)]
        return desc

    def validate(self, value: Any) -> None:
        """Raise :class:`ParameterError` if ``value`` is not allowed."""
        problem = None
        if self.choices is not None and value not in self.choices:
            problem = f'allowed values: {", ".join(map(repr, self.choices))}'
        elif self.low is not None and value < self.low:
            problem = f'must be >= {self.low}'
        elif self.high is not None and value > self.high:
            problem = f'must be <= {self.high}'
        elif self.check is not None:
            problem = self.check(value)
        if problem:
            raise ParameterError(f"parameter '{self.name}' = {value!r}: {problem}")


def _is_float_spec(spec: Param) -> bool:
    """Whether the parameter holds a double or a double array."""
    default = spec.default
    if isinstance(default, list):
        return default == [] or all(isinstance(v, float) for v in default)
    return isinstance(default, float)


def _as_float(value: Any) -> Any:
    """Return an integer (or integer list) as float(s), None for anything else."""
    def integer(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)
    if integer(value):
        return float(value)
    if isinstance(value, (list, tuple)) and value and all(integer(v) for v in value):
        return [float(v) for v in value]
    return None


def _declare_one(node: Node, spec: Param, lifecycle: bool = False) -> Parameter:
    """Declare one parameter with its override (public rclpy API only)."""
    # An empty list has no element type; declare it as a double array explicitly.
    default = Parameter.Type.DOUBLE_ARRAY if spec.default == [] else spec.default
    try:
        return node.declare_parameter(spec.name, default, spec.descriptor(lifecycle))
    except InvalidParameterTypeException:
        if not _is_float_spec(spec):
            raise
        # `-p name:=1` and YAML `name: 1` (or `[1, 2]`) arrive as integers, which rclpy
        # refuses for a double parameter. Read the override through a dynamically typed
        # probe, then declare the parameter with it as a float (ranges still apply).
        probe = node.declare_parameter(spec.name, None, ParameterDescriptor(
            dynamic_typing=True))
        given = _as_float(probe.value)
        node.undeclare_parameter(spec.name)
        if given is None:
            raise
        return node.declare_parameter(spec.name, given, spec.descriptor(lifecycle),
                                      ignore_override=True)


def declare(node: Node, specs: Sequence[Param],
            locked: Optional[Callable[[], Optional[str]]] = None) -> Dict[str, Any]:
    """Declare ``specs`` on ``node`` and return the validated values by name.

    The dict stays live: accepted run-time changes of writable parameters update it.
    locked (lifecycle nodes): returns None while the read-only parameters may change
    (the node unconfigured), else the reason they may not; None: read-only for good.
    """
    values = {}
    lifecycle = locked is not None
    for spec in specs:
        try:
            param = _declare_one(node, spec, lifecycle)
        except Exception as exc:  # rclpy raises several types for a wrong type or range
            raise ParameterError(f"parameter '{spec.name}': {exc}") from None
        value = param.value if param.value is not None else spec.default
        if isinstance(value, (list, tuple)) or hasattr(value, 'tolist'):
            value = list(value)
        if isinstance(spec.default, float) and isinstance(value, int):
            value = float(value)
        spec.validate(value)
        values[spec.name] = value
    by_name = {s.name: s for s in specs}

    def on_set(params: Sequence[Parameter]) -> SetParametersResult:
        # Run-time changes are validated like start-up values; read-only ones never get here
        # (a lifecycle node's get here, and pass only while it is unconfigured).
        reason = locked() if locked is not None else None
        for p in params:
            if p.name in by_name:
                if reason and by_name[p.name].read_only:
                    return SetParametersResult(
                        successful=False, reason=f"parameter '{p.name}' is read-only while "
                        f'the node is {reason}: deactivate and clean it up, set it, then '
                        'configure again')
                try:
                    by_name[p.name].validate(p.value)
                except ParameterError as exc:
                    return SetParametersResult(successful=False, reason=str(exc))
        for p in params:
            if p.name in by_name:
                values[p.name] = p.value  # the node reads this dict, so it sees the change
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(on_set)
    return values


#: Values of the nodes' ``device`` parameters.
DEVICES = ('auto', 'cuda', 'cpu')


def resolve_device(value: str, name: str = 'device') -> torch.device:
    """Return the torch device a ``device`` parameter stands for ('auto': CUDA if any)."""
    if value == 'cuda' and not torch.cuda.is_available():
        raise ParameterError(f"parameter '{name}' = 'cuda': no CUDA device is available; "
                             "use 'auto' or 'cpu'")
    return torch.device('cuda' if value == 'cuda' or (
        value == 'auto' and torch.cuda.is_available()) else 'cpu')
