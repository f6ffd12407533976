# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""launch/localize.launch.py and config/localize.yaml against the nodes they start.

launch_ros cannot be installed next to the PyPI ROS wheels, so the launch file is read as
Python source (ast): its executables must be installed by setup.py and CMakeLists.txt, its
arguments declared, its parameter overrides declared by the node they go to, typed as
declared and valid. The parameters file goes through the real rcl parser (rclpy) in a
namespace, as the nodes would read it. Where launch_ros is importable the launch
description is also generated.
"""

import ast
import importlib
import importlib.util
from pathlib import Path
import re

import pytest
import rclpy
from rclpy.node import Node
import yaml

from patch_netvlad_ros.nodes import camera_batcher, descriptor_node, graph, localizer_node
from patch_netvlad_ros.ros.params import declare

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = ROOT / 'launch' / 'localize.launch.py'
PARAMS_FILE = ROOT / 'config' / 'localize.yaml'
PACKAGE = 'patch_netvlad_ros'
GRAPH = 'localize_graph'
NODE_MODULES = {'camera_batcher': camera_batcher, 'descriptor_node': descriptor_node,
                'localizer_node': localizer_node}
NODE_PARAMS = {name: {p.name: p for p in module.PARAMS} for name, module in NODE_MODULES.items()}
#: Parameters that every rclpy node declares itself.
BUILTIN = {'use_sim_time'}
#: The launch arguments the graph is documented with, and their defaults.
ARGUMENTS = {'map': '', 'checkpoint': '', 'preset': '', 'image_width': '0',
             'image_height': '0', 'camera_topic': 'image_raw', 'transport': 'raw',
             'device': 'auto', 'precision': 'fp32', 'use_sim_time': 'false', 'namespace': '',
             'params_file': None, 'one_process': 'false', 'log_level': 'info',
             'odom_topic': '', 'sequence': 'true'}
TYPES = {'int': int, 'str': str, 'bool': bool, 'float': float}


# --- the launch file, read as source -------------------------------------------------------

def _name(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else getattr(func, 'attr', '')


def _first_string(call: ast.Call):
    arg = call.args[0] if call.args else None
    return arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None


class LaunchSource:
    """The launch file's calls and the local names of generate_launch_description."""

    def __init__(self, path: Path) -> None:
        self.tree = ast.parse(path.read_text(), str(path))
        functions = [f for f in self.tree.body if isinstance(f, ast.FunctionDef)
                     and f.name == 'generate_launch_description']
        assert functions, 'no generate_launch_description() in the launch file'
        self.function = functions[0]
        self.names = {}
        for stmt in ast.walk(self.function):
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 \
                    and isinstance(stmt.targets[0], ast.Name):
                self.names[stmt.targets[0].id] = stmt.value
        self.module_constants = {
            s.targets[0].id: s.value.value for s in self.tree.body
            if isinstance(s, ast.Assign) and len(s.targets) == 1
            and isinstance(s.targets[0], ast.Name) and isinstance(s.value, ast.Constant)}

    def calls(self, name: str):
        return [n for n in ast.walk(self.tree) if isinstance(n, ast.Call) and _name(n) == name]

    def resolve(self, node: ast.AST) -> ast.AST:
        """Follow a local name to its assigned value (through names); return others as is."""
        seen = set()
        while isinstance(node, ast.Name) and node.id in self.names and node.id not in seen:
            seen.add(node.id)
            node = self.names[node.id]
        return node

    def constant(self, node: ast.AST):
        node = self.resolve(node)
        if isinstance(node, ast.Name) and node.id in self.module_constants:
            return self.module_constants[node.id]
        return ast.literal_eval(node)

    def dict_entries(self, node: ast.AST):
        """{key: value node} of a dict literal, following names and ** spreads."""
        node = self.resolve(node)
        assert isinstance(node, ast.Dict), f'not a dict: {ast.unparse(node)}'
        entries = {}
        for key, value in zip(node.keys, node.values):
            if key is None:
                entries.update(self.dict_entries(value))
            else:
                entries[ast.literal_eval(key)] = value
        return entries

    def configurations(self, node: ast.AST):
        """Launch argument names read by LaunchConfiguration inside ``node`` (names followed)."""
        found = set()
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name) and sub.id in self.names:
                found |= self.configurations(self.names[sub.id])
            elif isinstance(sub, ast.Call) and _name(sub) == 'LaunchConfiguration':
                found.add(_first_string(sub))
        return found

    def arguments(self):
        """{name: DeclareLaunchArgument call}."""
        return {_first_string(c): c for c in self.calls('DeclareLaunchArgument')}

    def nodes(self):
        """[{keyword: value node}] of the launch_ros Node calls."""
        return [{k.arg: k.value for k in call.keywords} for call in self.calls('Node')]

    def overrides(self, node_kw):
        """Return a Node call's parameter overrides as {parameter: value node}, and the rest."""
        entries, others = {}, []
        for item in self.resolve(node_kw['parameters']).elts:
            if isinstance(self.resolve(item), ast.Dict):
                entries.update(self.dict_entries(item))
            else:
                others.append(item)
        return entries, others


def _keyword(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


def _typed(value_node: ast.AST):
    """(value_type, argument name) of ParameterValue(LaunchConfiguration(arg), value_type=T)."""
    assert isinstance(value_node, ast.Call) and _name(value_node) == 'ParameterValue', \
        f'{ast.unparse(value_node)}: wrap launch arguments in ParameterValue(value_type=...)'
    inner = value_node.args[0]
    assert isinstance(inner, ast.Call) and _name(inner) == 'LaunchConfiguration'
    value_type = _keyword(value_node, 'value_type')
    assert isinstance(value_type, ast.Name) and value_type.id in TYPES, \
        f'{ast.unparse(value_node)}: value_type must be one of {sorted(TYPES)}'
    return TYPES[value_type.id], _first_string(inner)


def _convert(text: str, value_type: type):
    """Convert a launch argument's text as ParameterValue(value_type=...) does for the node."""
    if value_type is bool:
        assert text.lower() in ('true', 'false'), f'{text!r} is not a bool'
        return text.lower() == 'true'
    return value_type(text)


@pytest.fixture(scope='module')
def source():
    return LaunchSource(LAUNCH)


@pytest.fixture(scope='module')
def launched(source):
    """{node name or GRAPH: Node keywords} of the launch file's Node actions."""
    result = {}
    for kw in source.nodes():
        executable = source.constant(kw['executable'])
        assert source.constant(kw['package']) == PACKAGE
        name = source.constant(kw['name']) if 'name' in kw else None
        key = GRAPH if executable == GRAPH else name
        assert key not in result, f'{key} started twice'
        result[key] = kw
    return result


def _console_scripts():
    tree = ast.parse((ROOT / 'setup.py').read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == 'console_scripts':
                    return dict(re.fullmatch(r'\s*(\S+)\s*=\s*(\S+)\s*', s).groups()
                                for s in ast.literal_eval(value))
    raise AssertionError('no console_scripts in setup.py')


def _cmake_programs():
    text = (ROOT / 'CMakeLists.txt').read_text()
    match = re.search(r'install\(\s*PROGRAMS(.*?)DESTINATION\s+lib/\$\{PROJECT_NAME\}\s*\)',
                      text, re.S)
    assert match, 'CMakeLists.txt installs no PROGRAMS into lib/${PROJECT_NAME}'
    return set(match.group(1).split())


def test_launch_file_compiles():
    compile(LAUNCH.read_text(), str(LAUNCH), 'exec')


def test_executables_are_installed(launched, source):
    scripts, programs = _console_scripts(), _cmake_programs()
    assert set(launched) == set(NODE_MODULES) | {GRAPH}
    for key, kw in launched.items():
        executable = source.constant(kw['executable'])
        if key != GRAPH:
            assert executable == key, f'node {key} runs executable {executable}'
        assert executable in scripts, f'{executable} is no console script in setup.py'
        module_name, func = scripts[executable].split(':')
        main = getattr(importlib.import_module(module_name), func)
        assert callable(main)
        wrapper = ROOT / 'bin' / executable
        assert wrapper.is_file(), f'bin/{executable} is missing'
        assert f'from {module_name} import {func}' in wrapper.read_text(), \
            f'bin/{executable} does not run {scripts[executable]}'
        assert f'bin/{executable}' in programs, \
            f'CMakeLists.txt does not install bin/{executable}'


def test_node_names_are_the_nodes_own(launched):
    # The parameters file's keys and `ros2 run` use the node's own name; the launch must too.
    for name, module in NODE_MODULES.items():
        text = Path(module.__file__).read_text()
        assert f"super().__init__('{name}'" in text, f'{module.__name__} is not named {name}'
    graph_modules = {cls.__module__ for cls in graph.NODES}
    assert graph_modules == {m.__name__ for m in NODE_MODULES.values()}
    assert 'name' not in launched[GRAPH], \
        'localize_graph must not be given a name: it would rename all three nodes'


def test_arguments_declared_and_used(source):
    declared = source.arguments()
    used = source.configurations(source.function)
    assert None not in used, 'LaunchConfiguration with a name that is not a literal'
    assert used <= set(declared), f'used and not declared: {sorted(used - set(declared))}'
    assert set(declared) <= used, f'declared and not used: {sorted(set(declared) - used)}'
    assert set(declared) == set(ARGUMENTS)
    for name, default in ARGUMENTS.items():
        value = _keyword(declared[name], 'default_value')
        assert value is not None, f'{name} has no default'
        assert _keyword(declared[name], 'description') is not None, f'{name}: no description'
        if default is not None:
            assert source.constant(value) == default, name
    # params_file defaults to the installed share/<package>/config/localize.yaml.
    default = _keyword(declared['params_file'], 'default_value')
    strings = set()
    for node in ast.walk(default):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            strings.add(node.value)
        elif isinstance(node, ast.Name) and node.id in source.module_constants:
            strings.add(source.module_constants[node.id])
    assert {PACKAGE, 'config', PARAMS_FILE.name} <= strings, ast.unparse(default)


def test_nodes_namespace_conditions_and_files(source, launched):
    for key, kw in launched.items():
        assert source.configurations(kw['namespace']) == {'namespace'}, key
        condition = kw['condition']
        expected = 'IfCondition' if key == GRAPH else 'UnlessCondition'
        assert _name(condition) == expected, f'{key}: {ast.unparse(condition)}'
        assert source.configurations(condition) == {'one_process'}, key
        entries, others = source.overrides(kw)
        # The parameters file first, the argument overrides after it (later ones win).
        assert len(others) == 1 and source.configurations(others[0]) == {'params_file'}, key
        first = source.resolve(kw['parameters']).elts[0]
        assert source.configurations(first) == {'params_file'}, key
        assert _typed(entries['use_sim_time']) == (bool, 'use_sim_time'), key


def test_overrides_are_declared_typed_and_valid(source, launched):
    declared = source.arguments()
    fed_by = {}  # parameter -> launch argument, the same for every node that takes it
    for key, kw in launched.items():
        entries, _ = source.overrides(kw)
        if key == GRAPH:  # the dicts go to all three nodes; each must be someone's parameter
            specs = {}
            for node_specs in NODE_PARAMS.values():
                specs.update(node_specs)
        else:
            specs = NODE_PARAMS[key]
        for param, value_node in entries.items():
            value_type, argument = _typed(value_node)
            assert fed_by.setdefault(param, argument) == argument, \
                f'{param} is fed by {fed_by[param]} and {argument}'
            if param in BUILTIN:
                continue
            assert param in specs, f'{key} declares no parameter {param}'
            spec = specs[param]
            assert type(spec.default) is value_type, \
                f'{key}.{param} is {type(spec.default).__name__}, launched as {value_type}'
            call = declared[argument]
            spec.validate(_convert(source.constant(_keyword(call, 'default_value')),
                                   value_type))
            choices = _keyword(call, 'choices')
            if spec.choices is not None:
                assert choices is not None, f'argument {argument}: give choices'
                assert set(source.constant(choices)) == set(spec.choices), argument
    expected = {
        'camera_batcher': {'image_topic', 'transport', 'map_path', 'preset', 'image_width',
                           'image_height'},
        'descriptor_node': {'checkpoint', 'map_path', 'preset', 'image_width', 'image_height',
                            'device', 'precision'},
        'localizer_node': {'map_path', 'device', 'odom_topic', 'sequence'},
    }
    for key, params in expected.items():
        entries, _ = source.overrides(launched[key])
        assert set(entries) == params | BUILTIN, key
    assert fed_by['map_path'] == 'map' and fed_by['image_topic'] == 'camera_topic'


def test_generate_launch_description():
    pytest.importorskip('launch_ros', reason='launch_ros is not installable next to the PyPI '
                        'ROS wheels used here; the launch file is checked as source instead')
    from launch import LaunchDescription
    spec = importlib.util.spec_from_file_location('localize_launch', LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    assert isinstance(description, LaunchDescription)
    assert {a.name for a in description.get_launch_arguments()} == set(ARGUMENTS)


# --- the parameters file ---------------------------------------------------------------------

def _yaml():
    return yaml.safe_load(PARAMS_FILE.read_text())


def _sections():
    """{node name: [lines of its section]} of the parameters file's text."""
    sections, current = {}, None
    for line in PARAMS_FILE.read_text().splitlines():
        match = re.match(r'^/\*\*/(\w+):\s*$', line)
        if match:
            current = sections.setdefault(match.group(1), [])
        elif current is not None:
            current.append(line)
    return sections


def _comment_above(lines, index):
    """Return the comment lines right above lines[index] as one string."""
    text = []
    while index > 0 and lines[index - 1].strip().startswith('#'):
        index -= 1
        text.insert(0, lines[index].strip().lstrip('#').strip())
    return ' '.join(text)


def test_params_file_sections(launched):
    data = _yaml()
    assert all(key.startswith('/**/') for key in data), 'keys must apply in any namespace'
    names = {key[len('/**/'):] for key in data}
    assert names == set(NODE_PARAMS) == set(launched) - {GRAPH}
    for key, section in data.items():
        assert set(section) == {'ros__parameters'}, key


@pytest.mark.parametrize('name', sorted(NODE_PARAMS))
def test_params_file_documents_every_parameter(name):
    values = _yaml()[f'/**/{name}']['ros__parameters']
    specs = NODE_PARAMS[name]
    assert set(values) <= set(specs), f'not parameters of {name}: {set(values) - set(specs)}'
    lines = _sections()[name]
    for param, spec in specs.items():
        if param in values:
            value = values[param]
            if isinstance(spec.default, list):
                assert isinstance(value, list) and all(type(v) is float for v in value)
            else:
                assert type(value) is type(spec.default), \
                    f'{name}.{param}: {value!r} is not a {type(spec.default).__name__}'
            spec.validate(value)
            assert value == spec.default, f'{name}.{param}: the file says {value!r}, the ' \
                f'node {spec.default!r}'
            pattern = rf'^\s+{param}:'
        else:
            # Only an empty list may be left out (a params file cannot type `[]`); it stays
            # in the file as a comment.
            assert spec.default == [], f'{name}.{param} is missing from {PARAMS_FILE.name}'
            pattern = rf'^\s+#\s*{param}:\s*\[\]\s*$'
        index = [i for i, line in enumerate(lines) if re.match(pattern, line)]
        assert len(index) == 1, f'{name}.{param}: {len(index)} lines'
        comment = ' '.join(_comment_above(lines, index[0]).split())
        summary = ' '.join(spec.description.split('(')[0].split())
        assert summary and summary in comment, f'{name}.{param}: comment {comment!r}'


@pytest.fixture(scope='module')
def ros_context():
    """Initialise an rclpy context of the module's own with the parameters file."""
    context = rclpy.Context()
    rclpy.init(context=context, args=['--ros-args', '--params-file', str(PARAMS_FILE)])
    yield context
    rclpy.shutdown(context=context)


@pytest.mark.parametrize('namespace', ['/robot', '/a/b', ''])
@pytest.mark.parametrize('name', sorted(NODE_PARAMS))
def test_params_file_through_rcl(ros_context, name, namespace):
    values = _yaml()[f'/**/{name}']['ros__parameters']
    # The file's values reached the node (wildcard key, namespace, types): a node that
    # declares whatever the file gives shows them through the public API ...
    probe = Node(name, namespace=namespace, context=ros_context,
                 automatically_declare_parameters_from_overrides=True)
    try:
        read = probe.get_parameters_by_prefix('')
        for param, value in values.items():
            assert param in read, f'{name}.{param} not read from the file'
            got = read[param].value
            assert (list(got) if isinstance(value, list) else got) == value, param
    finally:
        probe.destroy_node()
    node = Node(name, namespace=namespace, context=ros_context)
    try:
        # ... and the node's own declaration accepts them.
        declared = declare(node, NODE_MODULES[name].PARAMS)
        expected = {p.name: p.default for p in NODE_MODULES[name].PARAMS}
        expected.update(values)
        assert declared == expected
    finally:
        node.destroy_node()


@pytest.mark.parametrize('process', sorted(NODE_PARAMS) + [GRAPH])
def test_launch_overrides_through_rcl(tmp_path, source, launched, process):
    """The launch's overrides after the file, as launch_ros passes a parameter dict.

    launch_ros writes each dict to a temporary parameters file, keyed by the node's full
    name when the Node action has a name and a namespace, else by `/**` (localize_graph:
    every dict reaches every node of the process), and passes it after params_file. This
    does the same with the launch arguments' defaults, in the namespace /robot.
    """
    overrides = {}
    for param, value_node in source.overrides(launched[process])[0].items():
        value_type, argument = _typed(value_node)
        default = source.constant(_keyword(source.arguments()[argument], 'default_value'))
        overrides[param] = _convert(default, value_type)
    # The launch's defaults equal the file's (one camera-topic default): a camera topic
    # given at launch shows that the launch's values win.
    overrides['image_topic'] = '/front/image_raw'
    key = '/**' if process == GRAPH else f'/robot/{process}'
    extra = tmp_path / 'launch_params.yaml'
    extra.write_text(yaml.dump({key: {'ros__parameters': overrides}}, default_flow_style=False))
    context = rclpy.Context()
    rclpy.init(context=context, args=['--ros-args', '--params-file', str(PARAMS_FILE),
                                      '--params-file', str(extra)])
    try:
        for name in (NODE_MODULES if process == GRAPH else [process]):
            node = Node(name, namespace='/robot', context=context)
            try:
                values = declare(node, NODE_MODULES[name].PARAMS)
                for param, value in overrides.items():
                    if param in values:
                        assert values[param] == value, f'{name}.{param}'
                assert node.get_parameter('use_sim_time').value is False
                if name == 'camera_batcher':  # the launch's value, not the file's
                    assert values['image_topic'] == '/front/image_raw'
            finally:
                node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
