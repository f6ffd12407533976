# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The package's import graph: no circles, and a ROS-free core.

Every module of the installed patch_netvlad_ros is read with ast (nothing is imported),
with its imports at module level and inside functions alike: an import put inside a
function to dodge a circle is still a circle. Importing a.b.c runs a and a.b first, so
an import also reaches the packages above the module it names.
"""

import ast
import importlib.util
from pathlib import Path
from typing import Dict, List, Optional, Set

PACKAGE = 'patch_netvlad_ros'
#: What the core must never import: ROS client libraries and messages, the package's
#: ROS plumbing and command lines, and what is not installed.
CORE_FORBIDDEN = ('rclpy', 'rosidl_runtime_py', 'launch', 'launch_ros', 'tf2_ros',
                  'cv_bridge', 'sensor_msgs', 'std_msgs', 'geometry_msgs', 'nav_msgs',
                  'builtin_interfaces', 'diagnostic_msgs', 'patch_netvlad_ros_interfaces',
                  f'{PACKAGE}.nodes', f'{PACKAGE}.ros', f'{PACKAGE}.cli', 'benchmarks')


def package_root() -> Path:
    """The folder of the installed (or editable) package."""
    spec = importlib.util.find_spec(PACKAGE)
    assert spec is not None and spec.submodule_search_locations, f'{PACKAGE} is not installed'
    return Path(list(spec.submodule_search_locations)[0])


def modules() -> Dict[str, Path]:
    """Dotted name -> file of every module of the package (packages by their __init__)."""
    root = package_root()
    out = {}
    for path in sorted(root.rglob('*.py')):
        parts = [PACKAGE, *path.relative_to(root).with_suffix('').parts]
        if parts[-1] == '__init__':
            parts = parts[:-1]
        out['.'.join(parts)] = path
    return out


def absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module an ImportFrom names (relative levels resolved)."""
    if not node.level:
        return node.module or ''
    package = module.split('.') if is_package else module.split('.')[:-1]
    base = package[:len(package) - node.level + 1]
    return '.'.join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path) -> Set[str]:
    """Every module ``module`` imports, anywhere in its file (absolute names)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = absolute(node, module, path.name == '__init__.py')
            found.add(base)
            # `from package import name`: name may be a module of the package
            found.update(f'{base}.{alias.name}' for alias in node.names)
    return found


def graph() -> Dict[str, Set[str]]:
    """Module -> the package's modules it imports (and the packages above them)."""
    mods = modules()
    edges = {}
    for module, path in mods.items():
        targets = set()
        for name in imports_of(module, path):
            parts = name.split('.')
            for k in range(1, len(parts) + 1):
                prefix = '.'.join(parts[:k])
                if prefix in mods and prefix != module and not module.startswith(prefix + '.'):
                    targets.add(prefix)
        edges[module] = targets
    return edges


def find_cycle(edges: Dict[str, Set[str]]) -> Optional[List[str]]:
    """One import circle as [a, b, ..., a], or None."""
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> Optional[List[str]]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_the_graph_is_read():
    """The walk sees the package: the core and its modules' imports of each other."""
    edges = graph()
    core = [m for m in edges if m.startswith(f'{PACKAGE}.core.')]
    assert len(core) > 20
    assert sum(len(v) for v in edges.values()) > len(core)


def test_no_import_circles():
    """No module reaches itself through imports, function-level ones included."""
    cycle = find_cycle(graph())
    assert cycle is None, 'import circle: ' + ' -> '.join(cycle)


def test_find_cycle_finds_a_circle():
    """The checker itself: a circle through a function-level edge is found."""
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b'}, 'b': set(), 'c': {'a', 'b'}}) is None


def test_core_is_ros_free():
    """core/ never imports rclpy, messages, the nodes, ros/, the CLIs or benchmarks."""
    bad = []
    for module, path in modules().items():
        if not module.startswith(f'{PACKAGE}.core'):
            continue
        for name in imports_of(module, path):
            if any(name == f or name.startswith(f + '.') for f in CORE_FORBIDDEN):
                bad.append(f'{module} imports {name}')
    assert not bad, '\n'.join(sorted(bad))


def test_installed_package_needs_nothing_outside_it():
    """No module of the package imports benchmarks/ or the tests' helpers."""
    bad = []
    for module, path in modules().items():
        for name in imports_of(module, path):
            top = name.split('.')[0]
            if top in ('benchmarks', 'test', 'conftest', 'bag_writers'):
                bad.append(f'{module} imports {name}')
    assert not bad, '\n'.join(sorted(bad))


def test_float32_mutual_nn_is_a_leaf():
    """The float32 mutual NN every matcher agrees with imports nothing from the package."""
    edges = graph()
    leaf = f'{PACKAGE}.core.matching.mutual_nn'
    assert leaf in edges, f'{leaf} is missing'
    assert edges[leaf] <= {PACKAGE, f'{PACKAGE}.core', f'{PACKAGE}.core.matching'}, \
        sorted(edges[leaf])
