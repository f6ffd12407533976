# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""A few seconds of the C helpers' fuzz driver under AddressSanitizer and UBSan.

``test/fuzz/fuzz_native.py`` builds every helper this CPU can build with the sanitizers
and feeds it adversarial shapes and values (see ``fuzz_native.c``); any out-of-bounds
access, undefined behaviour or wrong match stops the driver with a report. Longer runs by
hand: ``python test/fuzz/fuzz_native.py --seconds 600``.
"""

import importlib.util
from pathlib import Path

import pytest


def _load_runner():
    """Import test/fuzz/fuzz_native.py (a script beside the tests, not a package)."""
    path = Path(__file__).resolve().parent / 'fuzz' / 'fuzz_native.py'
    spec = importlib.util.spec_from_file_location('fuzz_native', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fuzz_native = _load_runner()

MISSING = fuzz_native.sanitizer_missing()


@pytest.mark.slow  # builds every helper under the sanitizers, then fuzzes
@pytest.mark.skipif(bool(MISSING), reason=f'sanitizers unavailable: {MISSING}')
def test_helpers_survive_adversarial_inputs_under_the_sanitizers(tmp_path):
    exe, linked, skipped = fuzz_native.build(tmp_path)
    # the portable helpers build on any CPU with a C compiler; the screens where their
    # instruction sets exist (named in `skipped` otherwise)
    assert {'patch_vlad', 'winograd'} <= set(linked)
    assert set(linked) | set(skipped) == set(fuzz_native.HELPERS)
    proc = fuzz_native.run(exe, seed=2026, seconds=6.0)
    assert proc.returncode == 0, f'sanitizer report or failed check:\n{proc.stderr[-8000:]}'
    lines = {ln.split()[0]: ln.split() for ln in proc.stdout.splitlines()[1:]}
    for name in linked:
        key = 'mutual_nn_bf16' if name == 'mutual_nn' else name
        calls = int(lines[key][lines[key].index('calls') + 1])
        assert calls > 0, f'{name} was linked but never called:\n{proc.stdout}'
    if 'int_mnn' in linked:        # matches compared with the brute force, not just run
        assert int(lines['int_mnn'][lines['int_mnn'].index('checked') + 1]) > 0
