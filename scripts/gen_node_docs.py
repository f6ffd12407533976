# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Generate docs/nodes.md from the nodes' own declarations.

    python scripts/gen_node_docs.py            # rewrite docs/nodes.md
    python scripts/gen_node_docs.py --check    # exit 1 if docs/nodes.md is stale

Parameters come from each node module's ``PARAMS`` (the :class:`Param` specs the node
declares). Topics come from the node's code: every ``create_publisher``,
``create_lifecycle_publisher`` and ``create_subscription`` call in the module (and in the
package's helper classes it constructs, e.g. the diagnostics publisher) is read from its
syntax tree; message types and QoS profiles are then evaluated in the module's own
namespace, with the parameters at their defaults, so the tables show what the node really
creates. Modules are imported by name only.
"""

import argparse
import ast
import importlib
import inspect
from pathlib import Path
import sys
from types import ModuleType
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

#: The graph's nodes, in pipeline order (module names; the node is named as the module).
NODE_MODULES = (
    'patch_netvlad_ros.nodes.camera_batcher',
    'patch_netvlad_ros.nodes.descriptor_node',
    'patch_netvlad_ros.nodes.localizer_node',
)
ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / 'docs' / 'nodes.md'
#: The launch file whose DeclareLaunchArgument calls are documented (read, not run: the
#: `launch` package has no PyPI wheel).
LAUNCH_FILE = ROOT / 'launch' / 'localize.launch.py'
PACKAGE = 'patch_netvlad_ros'
#: rclpy calls that make a topic endpoint: name -> (direction, index of the QoS argument).
ENDPOINTS = {'create_publisher': ('out', 2), 'create_lifecycle_publisher': ('out', 2),
             'create_subscription': ('in', 3)}
#: Endpoints made by tf2_ros classes (not this package's code, so not read from source).
TF2 = {
    'TransformBroadcaster': [('out', '/tf', 'tf2_msgs/msg/TFMessage', 'tf2_ros default')],
    'StaticTransformBroadcaster': [('out', '/tf_static', 'tf2_msgs/msg/TFMessage',
                                    'tf2_ros default (transient local)')],
    'TransformListener': [('in', '/tf', 'tf2_msgs/msg/TFMessage', 'tf2_ros default'),
                          ('in', '/tf_static', 'tf2_msgs/msg/TFMessage',
                           'tf2_ros default (transient local)')],
}


class Endpoint:
    """One topic a node publishes or subscribes to, as documented."""

    def __init__(self, direction: str, topic: str, msg_type: str, qos: str, when: str):
        self.direction, self.topic, self.msg_type = direction, topic, msg_type
        self.qos, self.when = qos, when

    def key(self) -> Tuple[str, ...]:
        """Identity used to list each endpoint once."""
        return (self.direction, self.topic, self.msg_type, self.qos, self.when)


class _ParamRefs(ast.NodeTransformer):
    """Replace ``<anything>['name']`` for a parameter name by ``__params__['name']``."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = set(names)

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        key = node.slice
        if (isinstance(key, ast.Constant) and key.value in self.names
                and isinstance(node.value, (ast.Name, ast.Attribute))):
            return ast.copy_location(ast.Subscript(
                value=ast.Name('__params__', ast.Load()), slice=key, ctx=ast.Load()), node)
        return self.generic_visit(node)


class _Locals(ast.NodeTransformer):
    """Replace local variable names by the expressions last assigned to them."""

    def __init__(self, env: Dict[str, ast.AST]) -> None:
        self.env = env

    def visit_Name(self, node: ast.Name) -> ast.AST:
        # The environment holds expressions already resolved when they were assigned.
        return _copy(self.env[node.id]) if node.id in self.env else node


def _copy(node: ast.AST) -> ast.AST:
    return ast.parse(ast.unparse(node), mode='eval').body


def _readable(expr: ast.AST) -> str:
    """Source text with ``__params__['x']`` shown as ``x``."""
    return ast.unparse(expr).replace("__params__['", '').replace("']", '')


def _condition(test: ast.AST, negate: bool) -> str:
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        return _condition(test.operand, not negate)
    text = _readable(test)
    if not negate:
        return text
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq):
        return text.replace(' == ', ' != ', 1)
    return f'not {text}' if isinstance(test, (ast.Name, ast.Subscript)) else f'not ({text})'


class _Walker:
    """Walks a module's code in order, yielding each call with what is in force there.

    Local assignments are tracked (``env``: names to values resolved when assigned), and
    the conditions under which the call runs: the enclosing ``if`` tests, the negation of
    an earlier ``if ...: return`` in the same block, and, for a method reached through
    ``self.method(...)``, the conditions at its call sites. Methods that the class calls
    itself are walked from their call sites; the others (``__init__``, callbacks,
    lifecycle transitions) are the entry points.
    """

    def __init__(self, resolve: Callable[[ast.AST, Dict[str, ast.AST]], ast.AST],
                 condition: Callable[[ast.AST, Dict[str, ast.AST], bool], str]) -> None:
        self.resolve, self.condition = resolve, condition
        self.methods: Dict[str, ast.FunctionDef] = {}

    def module(self, tree: ast.Module) -> Iterator[Tuple[ast.Call, Dict, Tuple[str, ...]]]:
        """Yield (call, env, conditions) for every call reachable in the module."""
        for stmt in tree.body:
            if isinstance(stmt, ast.ClassDef):
                yield from self._class(stmt)
            elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield from self._block(stmt.body, {}, (), ())

    def _class(self, cls: ast.ClassDef) -> Iterator[Tuple[ast.Call, Dict, Tuple[str, ...]]]:
        self.methods = {f.name: f for f in cls.body
                        if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))}
        called = {m for m in self.methods for node in ast.walk(cls) if _self_call(node) == m}
        for name, method in self.methods.items():
            if name not in called:
                yield from self._block(method.body, {}, (), (name,))

    def _block(self, body: Sequence[ast.stmt], env: Dict[str, ast.AST],
               when: Tuple[str, ...], stack: Tuple[str, ...]) -> Iterator:
        for stmt in body:
            if isinstance(stmt, ast.If):
                yield from self._calls_in(stmt.test, env, when, stack)
                yield from self._block(stmt.body, dict(env), when + (
                    self.condition(stmt.test, env, False),), stack)
                yield from self._block(stmt.orelse, dict(env), when + (
                    self.condition(stmt.test, env, True),), stack)
                if not stmt.orelse and stmt.body and isinstance(stmt.body[-1], ast.Return):
                    # `if c: return` - the rest of the block runs only when not c.
                    when = when + (self.condition(stmt.test, env, True),)
            elif isinstance(stmt, (ast.For, ast.While, ast.With, ast.Try)):
                for field in ('body', 'orelse', 'finalbody'):
                    yield from self._block(getattr(stmt, field, []), env, when, stack)
                for handler in getattr(stmt, 'handlers', []):
                    yield from self._block(handler.body, env, when, stack)
            elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield from self._block(stmt.body, {}, (), stack)
            elif not isinstance(stmt, ast.ClassDef):
                yield from self._calls_in(stmt, env, when, stack)
                if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(
                        stmt.targets[0], ast.Name):
                    env[stmt.targets[0].id] = self.resolve(stmt.value, env)

    def _calls_in(self, node: ast.AST, env: Dict[str, ast.AST], when: Tuple[str, ...],
                  stack: Tuple[str, ...]) -> Iterator:
        for sub in ast.walk(node):
            if not isinstance(sub, ast.Call):
                continue
            yield sub, env, when
            method = _self_call(sub)
            if method in self.methods and method not in stack and len(stack) < 6:
                yield from self._block(self.methods[method].body, {}, when, stack + (method,))


def _self_call(node: ast.AST) -> Optional[str]:
    """Return the method name of a ``self.name(...)`` call, else None."""
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name) and node.func.value.id == 'self'):
        return node.func.attr
    return None


def _callee(func: ast.AST, env: Dict[str, ast.AST]) -> str:
    """Name of the function a call calls, through local aliases and ``getattr(x, 'name')``.

    E.g. ``publish = self.create_lifecycle_publisher`` or ``create = getattr(node,
    'create_lifecycle_publisher', node.create_publisher)`` name the rclpy method.
    """
    if isinstance(func, ast.Name) and func.id in env:
        func = env[func.id]
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    if (isinstance(func, ast.Call) and getattr(func.func, 'id', '') == 'getattr'
            and len(func.args) >= 2 and isinstance(func.args[1], ast.Constant)):
        return func.args[1].value
    return ''


class _Reader:
    """Reads one module's endpoints (and those of the package classes it constructs)."""

    def __init__(self, params: Sequence[Any]) -> None:
        self.params = params
        self.defaults = {p.name: p.default for p in params}

    def _resolve(self, expr: ast.AST, env: Dict[str, ast.AST]) -> ast.AST:
        # Parameter reads first, so that the dict they come from is never substituted.
        expr = _ParamRefs([p.name for p in self.params]).visit(_copy(expr))
        return ast.fix_missing_locations(_Locals(env).visit(expr))

    def _prepare(self, expr: ast.AST, env: Dict[str, ast.AST]) -> Tuple[ast.AST, List[str]]:
        expr = self._resolve(expr, env)
        used = []
        for sub in ast.walk(expr):
            if (isinstance(sub, ast.Subscript) and isinstance(sub.value, ast.Name)
                    and sub.value.id == '__params__' and sub.slice.value not in used):
                used.append(sub.slice.value)
        return expr, used

    def _eval(self, expr: ast.AST, module: ModuleType) -> Any:
        code = compile(ast.Expression(expr), '<doc>', 'eval')
        return eval(code, {**vars(module), '__params__': self.defaults})  # noqa: S307

    def endpoints(self, module: ModuleType, source: str, when: str = '',
                  depth: int = 0) -> List[Endpoint]:
        """Return the endpoints created in ``source`` (code of ``module``)."""
        found = []
        walker = _Walker(self._resolve, self._condition)
        for call, env, conds in walker.module(ast.parse(source)):
            where = ' and '.join(w for w in [when] + list(conds) if w)
            name = _callee(call.func, env)
            if name in ENDPOINTS and len(call.args) >= 2:
                found.append(self._endpoint(module, call, env, name, where))
            elif name in TF2:
                found += [Endpoint(d, f'`{t}`', f'`{m}`', q, where) for d, t, m, q in TF2[name]]
            elif depth < 2 and isinstance(call.func, ast.Name):
                cls = getattr(module, name, None)
                if (inspect.isclass(cls) and cls.__module__.startswith(PACKAGE)
                        and cls.__module__ != module.__name__):
                    helper = sys.modules[cls.__module__]
                    found += self.endpoints(helper, inspect.getsource(cls), where, depth + 1)
        return found

    def _condition(self, test: ast.AST, env: Dict[str, ast.AST], negate: bool) -> str:
        """Render a condition in parameter names; '' for one on anything but parameters."""
        expr, used = self._prepare(test, env)
        names = {n.id for n in ast.walk(expr) if isinstance(n, ast.Name)}
        if not used or names - {'__params__'}:
            return ''
        return _condition(expr, negate)

    def _endpoint(self, module: ModuleType, call: ast.Call, env, name: str,
                  where: str) -> Endpoint:
        direction, qos_index = ENDPOINTS[name]
        msg = self._eval(self._prepare(call.args[0], env)[0], module)
        msg_type = f'`{msg.__module__.split(".")[0]}/msg/{msg.__name__}`'
        topic_expr, topic_params = self._prepare(call.args[1], env)
        try:
            topic = self._eval(topic_expr, module)
        except Exception:  # not computable from the defaults: show the expression
            topic = None
        names = ', '.join(f'`{p}`' for p in topic_params)
        if topic:
            shown = f'`{topic}`' + (f' (parameter {names})' if names else '')
        elif names:
            shown = f'the value of {names} (empty by default: none)'
        else:
            shown = f'`{_readable(topic_expr)}`'
        qos_arg = call.args[qos_index] if len(call.args) > qos_index else next(
            (k.value for k in call.keywords if k.arg in ('qos_profile', 'qos')), None)
        return Endpoint(direction, shown, msg_type, self._qos(module, qos_arg, env), where)

    def _qos(self, module: ModuleType, expr: Optional[ast.AST], env) -> str:
        if expr is None:
            return 'not given'
        expr, used = self._prepare(expr, env)
        try:
            text = describe_qos(self._eval(expr, module))
        except Exception:  # not computable from the defaults: show the expression
            return f'`{_readable(expr)}`'
        if used:
            text += ' (by default; set by ' + ', '.join(f'`{u}`' for u in used) + ')'
        return text


def describe_qos(profile: Any) -> str:
    """Describe a QoS profile (or an rclpy depth) in words."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    if isinstance(profile, int):
        profile = QoSProfile(depth=profile)
    reliability = ReliabilityPolicy(profile.reliability).name.lower().replace('_', ' ')
    if HistoryPolicy(profile.history) == HistoryPolicy.KEEP_ALL:
        history = 'keep all'
    else:
        history = f'keep last {profile.depth}'
    text = f'{reliability}, {history}'
    if DurabilityPolicy(profile.durability) == DurabilityPolicy.TRANSIENT_LOCAL:
        text += ', transient local'
    return text


def _cell(text: str) -> str:
    return ' '.join(str(text).split()).replace('|', '\\|')


def param_type(default: Any) -> str:
    """ROS parameter type of a default value."""
    if isinstance(default, bool):
        return 'bool'
    if isinstance(default, int):
        return 'int'
    if isinstance(default, float):
        return 'double'
    if isinstance(default, str):
        return 'string'
    if isinstance(default, (list, tuple)):
        if default and all(isinstance(v, str) for v in default):
            return 'string[]'
        if default and all(isinstance(v, int) and not isinstance(v, bool) for v in default):
            return 'int[]'
        return 'double[]'
    return type(default).__name__


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return f'`{str(value).lower()}`'
    if isinstance(value, str):
        return f"`'{value}'`"
    if isinstance(value, (list, tuple)):
        return '`[' + ', '.join(str(v) for v in value) + ']`'
    return f'`{value}`'


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f'{value:g}'


def _allowed(spec: Any) -> str:
    if spec.choices is not None:
        return 'one of ' + ', '.join(_value(c) for c in spec.choices)
    if spec.low is not None and spec.high is not None:
        return f'[{_number(spec.low)}, {_number(spec.high)}]'
    if spec.low is not None:
        return f'>= {_number(spec.low)}'
    if spec.high is not None:
        return f'<= {_number(spec.high)}'
    return ''


def _lifecycle_note(module: ModuleType) -> str:
    """Return a sentence for nodes whose class is an rclpy LifecycleNode, else ''."""
    from rclpy.lifecycle import LifecycleNode
    classes = [c for c in vars(module).values()
               if inspect.isclass(c) and c.__module__ == module.__name__]
    if not any(issubclass(c, LifecycleNode) for c in classes):
        return ''
    return (' A lifecycle (managed) node: configure loads and creates its topics, activate '
            'serves; `autostart` does both at start-up (see '
            '[ros_graph.md](ros_graph.md#lifecycle)).')


def node_section(module_name: str) -> str:
    """Markdown for one node: summary, topics, parameters."""
    module = importlib.import_module(module_name)
    name = module_name.rsplit('.', 1)[1]
    doc = inspect.getdoc(module) or ''
    summary = doc.split('\n\n')[0].split(': ', 1)[-1] if doc else ''
    reader = _Reader(module.PARAMS)
    endpoints: Dict[Tuple[str, ...], Endpoint] = {}
    for ep in reader.endpoints(module, inspect.getsource(module)):
        key = ep.key()[:4]  # one row per endpoint; the conditions it is made under, or'ed
        if key not in endpoints:
            endpoints[key] = ep
        elif ep.when not in endpoints[key].when.split(' or '):
            first = endpoints[key]
            first.when = '' if not (first.when and ep.when) else f'{first.when} or {ep.when}'
    endpoints = list(endpoints.values())
    endpoints.sort(key=lambda e: e.direction != 'in')
    lines = [f'## {name}', '', _cell(summary), '',
             f'Executable `{name}` (`ros2 run patch_netvlad_ros {name}`); module '
             f'`{module_name}`.' + _lifecycle_note(module), '', '### Topics', '',
             '| | topic | type | QoS | when |', '|---|---|---|---|---|']
    for ep in endpoints:
        lines.append(f'| {ep.direction} | {_cell(ep.topic)} | {ep.msg_type} | {_cell(ep.qos)} '
                     f'| {_cell(ep.when) or "always"} |')
    lines += ['', '### Parameters', '',
              '| name | type | default | allowed | changes at run time | description |',
              '|---|---|---|---|---|---|']
    for spec in module.PARAMS:
        lines.append(f'| `{spec.name}` | {param_type(spec.default)} | {_value(spec.default)} '
                     f'| {_cell(_allowed(spec))} | {"no" if spec.read_only else "yes"} '
                     f'| {_cell(spec.description)} |')
    return '\n'.join(lines) + '\n'


def launch_arguments(path: Path = LAUNCH_FILE) -> List[Dict[str, str]]:
    """Return each DeclareLaunchArgument of a launch file: name, default, choices, text."""
    found = []
    for call in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(call, ast.Call) and _callee(call.func, {}) ==
                'DeclareLaunchArgument' and call.args):
            continue
        keywords = {k.arg: k.value for k in call.keywords}
        literal = {}
        for key in ('default_value', 'description', 'choices'):
            if key in keywords:
                try:
                    literal[key] = ast.literal_eval(keywords[key])
                except ValueError:  # a substitution: show the expression
                    literal[key] = None
        default = literal.get('default_value')
        found.append({
            'name': ast.literal_eval(call.args[0]),
            'default': (f'`{default}`' if default else _value(default) if default == '' else
                        f'`{ast.unparse(keywords["default_value"])}`'
                        if 'default_value' in keywords else 'required'),
            'choices': ', '.join(_value(c) for c in literal.get('choices') or []),
            'description': literal.get('description') or '',
        })
    return found


def launch_section() -> str:
    """Markdown for the launch file's arguments."""
    name = LAUNCH_FILE.name
    lines = ['## Launch arguments', '',
             f'`ros2 launch patch_netvlad_ros {name} map:=<map folder> ...`; the arguments '
             'override the parameters file.', '',
             '| argument | default | allowed | description |', '|---|---|---|---|']
    for arg in launch_arguments():
        lines.append(f"| `{arg['name']}` | {_cell(arg['default'])} | {_cell(arg['choices'])} "
                     f"| {_cell(arg['description'])} |")
    return '\n'.join(lines) + '\n'


def render() -> str:
    """Return the whole of docs/nodes.md."""
    head = [
        '# Nodes, topics and parameters',
        '',
        "<!-- Generated by scripts/gen_node_docs.py from the nodes' declarations: do not",
        '     edit by hand; run `python scripts/gen_node_docs.py` after changing a node. -->',
        '',
        'The graph: camera_batcher -> descriptor_node -> localizer_node (see',
        '[ros_graph.md](ros_graph.md) for the design, QoS choices, diagnostics and signals).',
        "Relative topic names follow the node's namespace; `~/` names are private to the",
        'node. Every parameter is declared with its description, range or allowed values',
        '(`ros2 param describe`), and is read-only where a change needs a restart; a bad',
        'value stops the node with a message naming the parameter (exit status 2).',
        '`config/localize.yaml` lists the same parameters with their defaults.',
        '',
        'Topics under "when" exist only under that condition (parameters at their names).',
        '',
    ]
    sections = [node_section(m) for m in NODE_MODULES] + [launch_section()]
    return '\n'.join(head) + '\n' + '\n'.join(sections)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Write docs/nodes.md, or with --check report whether it is up to date."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--check', action='store_true', help='exit 1 if the file is stale')
    parser.add_argument('--output', type=Path, default=OUTPUT, help='file to write')
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        stale = not args.output.exists() or args.output.read_text() != text
        if stale:
            print(f'error: {args.output} is stale: run `python scripts/gen_node_docs.py`',
                  file=sys.stderr)
        return 1 if stale else 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f'wrote {args.output}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
