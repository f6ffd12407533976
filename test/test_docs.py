# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The user documentation: a short README whose commands exist, generated node docs, links.

docs/nodes.md is generated from the nodes' declarations by scripts/gen_node_docs.py; this
test regenerates it and compares, so it cannot go stale.
"""

import importlib
import importlib.util
from pathlib import Path
import re
from typing import Dict, List

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / 'README.md'
LINK = re.compile(r'\[[^\]]*\]\(([^)\s]+)\)')


@pytest.fixture(scope='module')
def gen():
    """The generator script, loaded as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location('gen_node_docs',
                                                  ROOT / 'scripts' / 'gen_node_docs.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def rendered(gen) -> str:
    """What the generator writes now."""
    return gen.render()


def _sections(text: str) -> Dict[str, str]:
    """Split docs/nodes.md into its '## <node>' sections."""
    parts = re.split(r'^## (\w+)\n', text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def _outside_code(text: str) -> str:
    """The markdown text without fenced code blocks."""
    return re.sub(r'^```.*?^```', '', text, flags=re.M | re.S)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


def _anchors(path: Path) -> List[str]:
    return [_slug(h) for h in re.findall(r'^#+ (.+)$', _outside_code(path.read_text()),
                                         flags=re.M)]


def test_readme_is_short():
    lines = README.read_text().count('\n')
    assert lines < 200, f'README.md has {lines} lines: keep it under 200, details go to docs/'


def test_setup_commands_match_makefile_and_ci():
    text = README.read_text()
    section = text.split('## Set-up: two commands', 1)[1].split('\n## ', 1)[0]
    block = re.search(r'```bash\n(.*?)```', section, re.S).group(1)
    commands = re.findall(r'^(make \w+)', block, flags=re.M)
    assert commands == ['make demo', 'make test'], commands
    targets = re.findall(r'^([\w-]+):', (ROOT / 'Makefile').read_text(), flags=re.M)
    for command in commands:
        assert command.split()[1] in targets, f'{command}: no such target in the Makefile'
    ci = [line.strip() for line in (ROOT / '.ci' / 'run').read_text().splitlines()
          if line.strip() and not line.lstrip().startswith('#')]
    assert 'make test' in ci, "CI must run the README's test command, `make test`"


def test_node_docs_are_generated(rendered):
    current = (ROOT / 'docs' / 'nodes.md').read_text()
    assert current == rendered, (
        'docs/nodes.md is stale: run `python scripts/gen_node_docs.py`')


def test_every_parameter_documented_under_its_node(gen, rendered):
    sections = _sections(rendered)
    for module_name in gen.NODE_MODULES:
        node = module_name.rsplit('.', 1)[1]
        module = importlib.import_module(module_name)
        assert node in sections, f'{node} has no section in docs/nodes.md'
        for spec in module.PARAMS:
            row = f'| `{spec.name}` | {gen.param_type(spec.default)} | '
            assert row in sections[node], f'{node} parameter {spec.name} is not documented'


def _rows(section: str) -> List[List[str]]:
    topics = section.split('### Topics', 1)[1].split('###', 1)[0]
    return [[c.strip() for c in line.strip('|').split('|')]
            for line in topics.splitlines() if line.startswith('| in') or
            line.startswith('| out')]


def test_topics_read_from_the_code(rendered):
    # The pipeline's endpoints, by hand from the nodes' code: direction, topic, type, QoS.
    expected = {
        'camera_batcher': [
            ('in', '`image_raw` (parameter `image_topic`)', 'sensor_msgs/msg/Image',
             'best effort, keep last 5'),
            ('in', '`image_raw/compressed` (parameter `image_topic`)',
             'sensor_msgs/msg/CompressedImage', 'best effort, keep last 5'),
            ('in', '`image_batch_ack`', 'std_msgs/msg/UInt64', 'reliable, keep last 10'),
            ('out', '`image_batch`', 'patch_netvlad_ros_interfaces/msg/ImageBatch',
             'reliable, keep last 1'),
            ('out', '`/diagnostics`', 'diagnostic_msgs/msg/DiagnosticArray',
             'reliable, keep last 10'),
        ],
        'descriptor_node': [
            ('in', '`image_batch`', 'patch_netvlad_ros_interfaces/msg/ImageBatch',
             'reliable, keep last 4'),
            ('out', '`place_descriptors`', 'patch_netvlad_ros_interfaces/msg/PlaceDescriptors',
             'reliable, keep last 16'),
            ('out', '`image_batch_ack`', 'std_msgs/msg/UInt64', 'reliable, keep last 10'),
        ],
        'localizer_node': [
            ('in', '`place_descriptors`', 'patch_netvlad_ros_interfaces/msg/PlaceDescriptors',
             'reliable, keep last 16'),
            ('in', 'the value of `odom_topic` (empty by default: none)',
             'nav_msgs/msg/Odometry', 'best effort, keep last 50'),
            ('out', '`~/pose`', 'geometry_msgs/msg/PoseWithCovarianceStamped',
             'reliable, keep last 10'),
            ('out', '`~/match`', 'patch_netvlad_ros_interfaces/msg/PlaceMatch',
             'reliable, keep last 10'),
        ],
    }
    sections = _sections(rendered)
    for node, endpoints in expected.items():
        rows = _rows(sections[node])
        for direction, topic, msg_type, qos in endpoints:
            match = [r for r in rows if r[:3] == [direction, topic, f'`{msg_type}`']]
            assert match, f'{node}: {direction} {topic} {msg_type} missing from docs/nodes.md'
            assert match[0][3].startswith(qos), f'{node} {topic}: QoS {match[0][3]!r}'


def test_check_mode_detects_a_stale_file(gen, rendered, tmp_path, capsys):
    target = tmp_path / 'nodes.md'
    target.write_text(rendered.replace('camera_batcher', 'camera_batcher ', 1))
    assert gen.main(['--check', '--output', str(target)]) == 1
    assert 'run `python scripts/gen_node_docs.py`' in capsys.readouterr().err
    target.write_text(rendered)
    assert gen.main(['--check', '--output', str(target)]) == 0


def test_relative_links_point_to_existing_files():
    pages = [README, ROOT / 'CHANGELOG.md'] + sorted((ROOT / 'docs').glob('*.md'))
    broken = []
    for page in pages:
        for target in LINK.findall(_outside_code(page.read_text())):
            if re.match(r'[a-z]+:', target):
                continue  # http:, https:, mailto:
            path, _, anchor = target.partition('#')
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f'{page.relative_to(ROOT)}: {target} (no such file)')
            elif anchor and dest.suffix == '.md' and anchor not in _anchors(dest):
                broken.append(f'{page.relative_to(ROOT)}: {target} (no such heading)')
    assert not broken, 'broken links:\n' + '\n'.join(broken)


def test_launch_arguments_documented(rendered):
    launch = (ROOT / 'launch' / 'localize.launch.py').read_text()
    declared = re.findall(r"DeclareLaunchArgument\(\s*'(\w+)'", launch)
    section = rendered.split('## Launch arguments', 1)[1]
    documented = re.findall(r'^\| `(\w+)` \|', section, flags=re.M)
    assert documented == declared, 'docs/nodes.md launch arguments differ from the launch file'


def test_readme_nodes_table_names_real_parameters(gen):
    table = README.read_text().split('## Nodes', 1)[1].split('\n\n', 2)[1]
    rows = [[c.strip() for c in line.strip('|').split('|')]
            for line in table.splitlines()[2:] if line.startswith('| `')]
    nodes = {m.rsplit('.', 1)[1]: m for m in gen.NODE_MODULES}
    assert sorted(r[0].strip('`') for r in rows) == sorted(nodes)
    for row in rows:
        node = row[0].strip('`')
        names = {p.name for p in importlib.import_module(nodes[node]).PARAMS}
        for name in re.findall(r'`(\w+)`', row[3]):
            assert name in names, f'README nodes table: {node} has no parameter {name}'
