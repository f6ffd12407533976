# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Node parameters declared on real rclpy nodes: defaults, overrides, validation."""

import itertools
import re

import pytest
from rcl_interfaces.msg import ParameterType
import rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter

from patch_netvlad_ros.nodes import camera_batcher, descriptor_node, localizer_node
from patch_netvlad_ros.ros.params import declare, Param, ParameterError

pytestmark = pytest.mark.ros


def _even(value):
    return None if value % 2 == 0 else 'must be even'


SPECS = [
    Param('n', 3, 'an int', low=1, high=10),
    Param('k', 5, 'an int with a lower bound only', low=1),
    Param('f', 0.5, 'a float', low=0.0, high=1.0, read_only=False),
    Param('c', 'a', 'a choice', choices=('a', 'b')),
    Param('w', 'x', 'a writable choice', choices=('x', 'y'), read_only=False),
    Param('e', 4, 'an even int', check=_even, read_only=False),
    Param('s', 'text', 'a string'),
    Param('flag', False, 'a bool'),
    Param('l', [], 'a list of doubles'),
]
DEFAULTS = {'n': 3, 'k': 5, 'f': 0.5, 'c': 'a', 'w': 'x', 'e': 4, 's': 'text', 'flag': False,
            'l': []}
_names = itertools.count()


@pytest.fixture
def make_node():
    """Build nodes with parameter overrides in a private context; shut it down after."""
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    nodes = []

    def make(**overrides):
        node = Node(f'params_test_{next(_names)}', context=ctx,
                    parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.destroy_node()
    rclpy.shutdown(context=ctx)


def test_declare_returns_defaults(make_node):
    """Without overrides every parameter takes its default, typed like it."""
    node = make_node()
    values = declare(node, SPECS)
    assert values == DEFAULTS
    assert type(values['f']) is float and type(values['n']) is int
    assert type(values['l']) is list
    assert node.get_parameter('n').value == 3
    assert node.get_parameter('c').value == 'a'


def test_overrides_are_taken(make_node):
    """Overrides given at node creation replace the defaults."""
    node = make_node(n=10, k=1000, f=0.25, c='b', w='y', e=-2, s='other', flag=True)
    values = declare(node, SPECS)
    assert values == {'n': 10, 'k': 1000, 'f': 0.25, 'c': 'b', 'w': 'y', 'e': -2,
                      's': 'other', 'flag': True, 'l': []}
    assert node.get_parameter('s').value == 'other'


@pytest.mark.parametrize('name,value,allowed', [
    ('n', 11, [r'\b1\b', r'\b10\b']),
    ('n', 0, [r'\b1\b', r'\b10\b']),
    ('n', -7, [r'\b1\b', r'\b10\b']),
    ('k', 0, [r'\b1\b']),
    ('f', 1.5, [r'0\.0', r'1\.0']),
    ('f', -0.25, [r'0\.0', r'1\.0']),
    ('c', 'z', ["'a'", "'b'"]),
    ('w', 'X', ["'x'", "'y'"]),
    ('e', 3, ['even']),
])
def test_bad_values_raise_naming_parameter_and_allowed(make_node, name, value, allowed):
    """Out-of-range, not-a-choice and failed checks raise ParameterError with the rule."""
    node = make_node(**{name: value})
    with pytest.raises(ParameterError, match=f"'{name}'") as info:
        declare(node, SPECS)
    message = str(info.value)
    for pattern in allowed:
        assert re.search(pattern, message), (pattern, message)


def test_range_bounds_are_inclusive(make_node):
    """The ends of a range are allowed values."""
    values = declare(make_node(n=1, f=1.0), SPECS)
    assert (values['n'], values['f']) == (1, 1.0)
    values = declare(make_node(n=10, f=0.0), SPECS)
    assert (values['n'], values['f']) == (10, 0.0)


@pytest.mark.parametrize('name,value', [
    ('n', 'seven'),
    ('n', 3.0),
    ('s', 5),
    ('flag', 'yes'),
    ('c', 1),
    ('f', 'half'),
    ('l', 'x'),
])
def test_wrong_type_raises_naming_parameter(make_node, name, value):
    """A value of another type than the default's raises ParameterError naming it."""
    with pytest.raises(ParameterError, match=f"parameter '{name}'"):
        declare(make_node(**{name: value}), SPECS)


def test_descriptors_are_advertised(make_node):
    """describe_parameter shows description, read-only flag and ranges."""
    node = make_node()
    declare(node, SPECS)
    n = node.describe_parameter('n')
    assert n.description == 'an int'
    assert n.read_only is True
    assert n.type == ParameterType.PARAMETER_INTEGER
    assert [(r.from_value, r.to_value) for r in n.integer_range] == [(1, 10)]
    assert list(n.floating_point_range) == []
    k = node.describe_parameter('k')
    assert [(r.from_value, r.to_value) for r in k.integer_range] == [(1, 2 ** 31 - 1)]
    f = node.describe_parameter('f')
    assert f.description == 'a float'
    assert f.read_only is False
    assert f.type == ParameterType.PARAMETER_DOUBLE
    assert [(r.from_value, r.to_value) for r in f.floating_point_range] == [(0.0, 1.0)]
    assert list(f.integer_range) == []
    c = node.describe_parameter('c')
    assert c.description == 'a choice (one of: a, b)'
    assert c.read_only is True
    s = node.describe_parameter('s')
    assert s.description == 'a string'
    assert list(s.integer_range) == [] and list(s.floating_point_range) == []


def test_empty_list_default_is_a_double_array(make_node):
    """An empty-list default declares a double array: [] unless overridden."""
    node = make_node()
    values = declare(node, SPECS)
    assert values['l'] == []
    assert node.describe_parameter('l').type == ParameterType.PARAMETER_DOUBLE_ARRAY

    node = make_node(l=[0.25, 0.75, 2.0])
    values = declare(node, SPECS)
    assert values['l'] == [0.25, 0.75, 2.0]
    assert type(values['l']) is list


def test_float_parameter_accepts_an_int_override(make_node):
    """`-p f:=1` (an integer) is taken by a float parameter as 1.0."""
    node = make_node(f=1)
    values = declare(node, SPECS)
    assert values['f'] == 1.0 and type(values['f']) is float
    assert node.get_parameter('f').type_ == Parameter.Type.DOUBLE
    assert node.get_parameter('f').value == 1.0


def test_double_array_parameter_accepts_an_int_list_override(make_node):
    """`-p l:=[1, 2]` (integers) is taken by a double-array parameter as floats."""
    node = make_node(l=[1, 2])
    values = declare(node, SPECS)
    assert values['l'] == [1.0, 2.0] and all(type(v) is float for v in values['l'])
    assert node.get_parameter('l').type_ == Parameter.Type.DOUBLE_ARRAY


def test_int_override_of_float_parameter_is_still_range_checked(make_node):
    """An integer given to a float parameter is validated like a float."""
    with pytest.raises(ParameterError, match="'f'"):
        declare(make_node(f=2), SPECS)


def test_run_time_change_of_writable_parameter_is_validated(make_node):
    """set_parameters on writable parameters: bad values refused with a reason, good taken."""
    node = make_node()
    values = declare(node, SPECS)

    [result] = node.set_parameters([Parameter('f', value=0.75)])
    assert result.successful
    assert values['f'] == 0.75

    [result] = node.set_parameters([Parameter('f', value=1.5)])
    assert not result.successful
    assert 'f' in result.reason and '1.5' in result.reason
    assert values['f'] == 0.75
    assert node.get_parameter('f').value == 0.75

    [result] = node.set_parameters([Parameter('w', value='z')])
    assert not result.successful
    assert "parameter 'w'" in result.reason and "'x', 'y'" in result.reason
    assert values['w'] == 'x'

    [result] = node.set_parameters([Parameter('w', value='y')])
    assert result.successful
    assert values['w'] == 'y'

    [result] = node.set_parameters([Parameter('e', value=7)])
    assert not result.successful
    assert 'even' in result.reason
    assert values['e'] == 4


def test_run_time_atomic_change_is_all_or_nothing(make_node):
    """One bad value in an atomic change rejects the good one too; the dict is unchanged."""
    node = make_node()
    values = declare(node, SPECS)
    result = node.set_parameters_atomically([Parameter('w', value='y'),
                                             Parameter('e', value=5)])
    assert not result.successful
    assert values['w'] == 'x' and values['e'] == 4
    result = node.set_parameters_atomically([Parameter('w', value='y'),
                                             Parameter('e', value=6)])
    assert result.successful
    assert values['w'] == 'y' and values['e'] == 6


def test_read_only_parameters_refuse_changes(make_node):
    """set_parameters on a read-only parameter fails and changes nothing."""
    node = make_node()
    values = declare(node, SPECS)
    for name, value in (('n', 4), ('c', 'b'), ('s', 'x')):
        [result] = node.set_parameters([Parameter(name, value=value)])
        assert not result.successful
        assert 'read-only' in result.reason
        assert values[name] == DEFAULTS[name]
        assert node.get_parameter(name).value == DEFAULTS[name]


def test_lifecycle_read_only_parameters_change_only_while_unlocked(make_node):
    """With ``locked`` (a lifecycle node), read-only parameters change while it returns None.

    Changes are validated as ever; while locked they are refused naming the state, and
    writable parameters are unaffected.
    """
    node = make_node()
    state = {'now': None}
    values = declare(node, SPECS, locked=lambda: state['now'])
    description = node.describe_parameter('s')
    assert not description.read_only
    assert description.description == 'a string (set while the node is unconfigured)'
    assert node.describe_parameter('w').description.endswith('(one of: x, y)')

    [result] = node.set_parameters([Parameter('s', value='other')])
    assert result.successful and values['s'] == 'other'
    [result] = node.set_parameters([Parameter('c', value='z')])
    assert not result.successful and "'a', 'b'" in result.reason and values['c'] == 'a'

    state['now'] = 'active'
    [result] = node.set_parameters([Parameter('s', value='third')])
    assert not result.successful
    assert result.reason.startswith("parameter 's' is read-only while the node is active")
    assert values['s'] == 'other' and node.get_parameter('s').value == 'other'
    [result] = node.set_parameters([Parameter('w', value='y')])
    assert result.successful and values['w'] == 'y'


def test_validate_directly():
    """Param.validate applies choices, bounds and the check function."""
    Param('x', 2, 'd', low=1, high=3).validate(3)
    with pytest.raises(ParameterError, match=r"parameter 'x' = 4: must be <= 3"):
        Param('x', 2, 'd', low=1, high=3).validate(4)
    with pytest.raises(ParameterError, match=r"parameter 'x' = 0: must be >= 1"):
        Param('x', 2, 'd', low=1, high=3).validate(0)
    with pytest.raises(ParameterError, match=r"parameter 'x' = 'c': allowed values: 'a', 'b'"):
        Param('x', 'a', 'd', choices=('a', 'b')).validate('c')
    with pytest.raises(ParameterError, match='must be even'):
        Param('x', 2, 'd', check=_even).validate(3)


NODE_PARAMS = {
    'camera_batcher': camera_batcher.PARAMS,
    'descriptor_node': descriptor_node.PARAMS,
    'localizer_node': localizer_node.PARAMS,
}


@pytest.mark.parametrize('node_name', sorted(NODE_PARAMS))
def test_node_params_are_consistent(node_name):
    """Each node's PARAMS: unique names, documented, defaults that pass their own rules."""
    params = NODE_PARAMS[node_name]
    assert params
    names = [p.name for p in params]
    assert len(names) == len(set(names)), names
    for p in params:
        assert isinstance(p, Param)
        assert p.description.strip(), p.name
        p.validate(p.default)
        if p.choices is not None:
            assert p.default in p.choices, p.name


@pytest.mark.parametrize('node_name', sorted(NODE_PARAMS))
def test_node_params_declare_on_a_real_node(make_node, node_name):
    """Each node's PARAMS declare on a plain node and come back as their defaults."""
    params = NODE_PARAMS[node_name]
    node = make_node()
    values = declare(node, params)
    assert values == {p.name: p.default for p in params}
    for p in params:
        assert node.describe_parameter(p.name).description.startswith(p.description)
