# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""bench_soak: the graph under a steady camera for minutes; frames and memory.

    python -m benchmarks.bench_soak --minutes 10            # 30 Hz for 10 minutes (18000 frames)
    python -m benchmarks.bench_soak --minutes 0.5 --transport raw --encoding bgr8

A camera at --rate Hz (default 30) publishes the shipped corridor queries, cycled, at
--camera-size (default 640x480) as JPEG CompressedImage (--transport compressed, the
default) or raw Image in --encoding, into the graph as launched: three node processes
with their default settings (camera QoS, batcher buffer, batch size, flow control) and a
map of the corridor references at the network size --image-size (default 320x240, whose
bootstrapped model is cached; other sizes bootstrap one first, minutes). The resident
set size of every node process is sampled from /proc/<pid>/status every
--sample-period seconds. At the end every frame is accounted for: lost before
camera_batcher (exact: published minus received, beside what the batcher detected),
answered, or dropped by reason (the nodes' /diagnostics); plus each node's worst
diagnostic level and the latency of the answers. Prints tables and writes JSON.
"""

import argparse
import json
from pathlib import Path
import platform
import sys
import tempfile
import threading
import time
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from benchmarks.bench_graph import corridor_bench_map
from patch_netvlad_ros.cli.common import (CliParser, image_size, output_file, positive_float,
                                          positive_int, progress_bar, run_main, say)


def camera_size(text: str) -> Tuple[int, int]:
    """Parse a camera frame size 'WIDTHxHEIGHT' into (height, width)."""
    try:
        width, height = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'must look like 640x480; got {text!r}') from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f'width and height must be >= 1; got {text!r}')
    return height, width


def camera_messages(size: Tuple[int, int], transport: str, encoding: str) -> List:
    """Make the corridor queries at ``size`` (height, width) camera messages, unstamped."""
    import cv2
    from sensor_msgs.msg import CompressedImage, Image

    from patch_netvlad_ros.core.drives.datasets import corridor
    from patch_netvlad_ros.core.drives.encodings import encode_raw
    from patch_netvlad_ros.core.model.image import load_image

    out = []
    for path in corridor().queries:
        rgb = cv2.resize(load_image(path), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        if transport == 'compressed':
            ok, jpeg = cv2.imencode('.jpg', rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
            msg = CompressedImage(format='jpeg')
            msg.data = jpeg.tobytes()
        else:
            data, step = encode_raw(rgb, encoding)
            msg = Image(height=size[0], width=size[1], encoding=encoding, step=step)
            msg.data = data
        msg.header.frame_id = 'camera'
        out.append(msg)
    return out


def camera(messages: List, rate: float, count: int) -> Iterator[Tuple[float, object]]:
    """Yield (stamp, message) of a steady camera: the messages cycled, stamped at rate."""
    t0 = float(int(time.time()))
    for i in range(count):
        stamp = t0 + i / rate
        msg = messages[i % len(messages)]
        msg.header.stamp.sec = int(stamp)
        msg.header.stamp.nanosec = int(round((stamp % 1) * 1e9)) % 1_000_000_000
        yield stamp, msg   # published before the next one is stamped


class RssSampler:
    """Sample the resident set size of processes every ``period`` seconds (a thread)."""

    def __init__(self, period: float) -> None:
        self.period = period
        self.samples: List[Tuple[float, Dict[str, Optional[int]]]] = []
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self, pids: Dict[str, int]) -> None:
        """Start sampling ``pids`` (name -> process id)."""
        from patch_netvlad_ros.ros.graph_processes import rss_kib
        t0 = time.monotonic()

        def run() -> None:
            while not self._stop.is_set():
                self.samples.append((time.monotonic() - t0,
                                     {kind: rss_kib(pid) for kind, pid in pids.items()}))
                self._stop.wait(self.period)
        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def summary(self, run_s: float) -> Dict[str, Dict[str, float]]:
        """Return per process: MiB at start, after warm-up, at the end, max, growth.

        Warm-up: a quarter of the run; growth: MiB/min fitted over the second half.
        """
        out = {}
        kinds = sorted({k for _, s in self.samples for k in s})
        for kind in kinds:
            series = [(t, s[kind] / 1024) for t, s in self.samples if s.get(kind)]
            if not series:
                continue
            t = np.array([p[0] for p in series])
            mib = np.array([p[1] for p in series])
            warm = mib[np.searchsorted(t, run_s / 4)] if t[-1] >= run_s / 4 else mib[-1]
            half = t >= t[-1] / 2
            slope = (float(np.polyfit(t[half] / 60, mib[half], 1)[0])
                     if half.sum() >= 3 else float('nan'))
            out[kind] = {'start_mib': float(mib[0]), 'warm_mib': float(warm),
                         'end_mib': float(mib[-1]), 'max_mib': float(mib.max()),
                         'growth_mib_per_min': slope, 'samples': len(series)}
        return out


def _pct(values: List[float]) -> Dict[str, float]:
    if not values:
        return {'p50': float('nan'), 'p95': float('nan'), 'max': float('nan')}
    return {'p50': float(np.percentile(values, 50)), 'p95': float(np.percentile(values, 95)),
            'max': float(np.max(values))}


def soak(args: argparse.Namespace, workdir: Path) -> Dict:
    """Run the camera into the graph (see the module docstring); return the report."""
    from patch_netvlad_ros.ros.replay import replay_through_graph

    map_path, ckpt = corridor_bench_map(args.preset, args.image_size, args.map_size, workdir)
    messages = camera_messages(args.camera_size, args.transport, args.encoding)
    count = max(1, int(round(args.minutes * 60 * args.rate)))
    sampler = RssSampler(args.sample_period)
    say(f'soak: {count} frames at {args.rate:g} Hz ({args.minutes:g} min) into '
        f'{args.processes} process(es)')
    try:
        record = replay_through_graph(
            camera(messages, args.rate, count), args.transport == 'compressed', str(map_path),
            str(ckpt), args.preset, args.image_size, 1.0, args.processes,
            expected_frames=count, timeout_per_frame=2.0, on_start=sampler.start,
            progress=progress_bar(count, 'camera'))
    finally:
        sampler.stop()
    ledger = record.ledger or {}
    published = len(record.published)
    latency = [1e3 * (arrived - record.published[key])
               for key, (_, arrived) in record.matches.items() if key in record.published]
    frame_bytes = [len(m.data) for m in messages]
    return {
        'machine': {'cpu': platform.processor() or platform.machine(),
                    'python': platform.python_version()},
        'camera': {'rate_hz': args.rate, 'minutes': args.minutes,
                   'size': [args.camera_size[1], args.camera_size[0]],
                   'transport': args.transport,
                   'encoding': args.encoding if args.transport == 'raw' else 'jpeg',
                   'mean_frame_bytes': float(np.mean(frame_bytes))},
        'network_size': [args.image_size[1], args.image_size[0]], 'preset': args.preset,
        'map_size': args.map_size, 'processes': args.processes,
        'run_seconds': record.seconds, 'settled': record.settled,
        'frames': {'published': published, 'lost_before_batcher': published
                   - ledger.get('received', 0),
                   'detected_before_batcher': ledger.get('before_batcher', {}),
                   'received': ledger.get('received'), 'answered': ledger.get('answered'),
                   'dropped': ledger.get('dropped'), 'in_flight': ledger.get('in_flight'),
                   'unexplained': ledger.get('unexplained')},
        'answered_hz': (len(record.matches) / record.seconds) if record.seconds else 0.0,
        'latency_ms': _pct(latency),
        'worst_level': {k: {'level': v[0], 'message': v[1]} for k, v in record.worst.items()},
        'rss': sampler.summary(record.seconds),
        'rss_series': [[round(t, 1), s] for t, s in sampler.samples[::max(
            1, len(sampler.samples) // 600)]],
        'diagnostics': {k: v.get('values') for k, v in record.diagnostics.items()},
    }


def print_report(r: Dict) -> None:
    """Print the soak's tables."""
    f, cam = r['frames'], r['camera']
    print(f"\nsoak: {cam['rate_hz']:g} Hz {cam['size'][0]}x{cam['size'][1]} "
          f"{cam['encoding']} ({cam['mean_frame_bytes'] / 1024:.0f} KiB a frame) for "
          f"{cam['minutes']:g} min into {r['processes']} process(es), network "
          f"{r['network_size'][0]}x{r['network_size'][1]}; settled: {r['settled']}")
    rows = [('published', f['published']),
            ('lost before camera_batcher', f['lost_before_batcher']),
            ('  detected by it (upstream_lost)', f['detected_before_batcher'].get(
                'upstream_lost')),
            ('received by camera_batcher', f['received']),
            ('answered (~/match)', f['answered'])]
    rows += [(f'dropped: {k}', v) for k, v in (f['dropped'] or {}).items()]
    rows += [('in flight at the end', f['in_flight']), ('unexplained', f['unexplained'])]
    for name, value in rows:
        print(f'{name:>34s} {value!s:>10s}')
    lat = r['latency_ms']
    print(f"answers {r['answered_hz']:.2f}/s, latency p50 {lat['p50']:.0f} ms, p95 "
          f"{lat['p95']:.0f} ms, max {lat['max']:.0f} ms")
    print('\nresident memory per node (MiB; growth fitted over the second half)')
    head = ('node', 'start', 'warm', 'end', 'max', 'MiB/min')
    print(f'{head[0]:>16s}' + ''.join(f'{h:>10s}' for h in head[1:]))
    for kind, m in r['rss'].items():
        print(f'{kind:>16s}' + ''.join(f'{m[k]:>10.1f}' for k in (
            'start_mib', 'warm_mib', 'end_mib', 'max_mib', 'growth_mib_per_min')))
    print('\nworst /diagnostics level per node')
    for kind, w in r['worst_level'].items():
        print(f"{kind:>16s} {w['level']:>6s}  {w['message']}")


@run_main
def main(argv: Optional[list] = None) -> int:
    """Entry point; returns the exit status."""
    parser = CliParser(prog='python -m benchmarks.bench_soak', description=__doc__.splitlines()[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog='\n'.join(__doc__.splitlines()[1:]))
    parser.add_argument('--minutes', type=positive_float, default=10.0,
                        help='how long the camera runs (default 10)')
    parser.add_argument('--rate', type=positive_float, default=30.0,
                        help='camera rate in Hz (default 30)')
    parser.add_argument('--camera-size', type=camera_size, default=(480, 640),
                        metavar='WxH', help='camera frame size (default 640x480)')
    parser.add_argument('--transport', choices=('compressed', 'raw'), default='compressed',
                        help="camera messages: JPEG CompressedImage ('compressed', default) "
                        "or Image ('raw')")
    parser.add_argument('--encoding', default='bgr8',
                        help='Image encoding with --transport raw (default bgr8)')
    parser.add_argument('--preset', default='speed', choices=('performance', 'speed',
                                                              'storage'))
    parser.add_argument('--image-size', type=image_size, default=(240, 320), metavar='WxH',
                        help='network input size (default 320x240)')
    parser.add_argument('--map-size', type=positive_int, default=111,
                        help='references in the map (default 111)')
    parser.add_argument('--processes', choices=('three', 'one'), default='three',
                        help="'three' node processes as launched (default) or 'one'")
    parser.add_argument('--sample-period', type=positive_float, default=1.0,
                        help='seconds between RSS samples (default 1)')
    parser.add_argument('--output', type=output_file, default='out/bench_soak.json')
    args = parser.parse_args(argv)
    if args.transport == 'raw':
        from patch_netvlad_ros.core.drives.encodings import encode_raw
        try:
            encode_raw(np.zeros((2, 2, 3), np.uint8), args.encoding)
        except Exception as exc:  # noqa: B902 - ImageError names the supported encodings
            parser.error(f'argument --encoding: {exc}')
    with tempfile.TemporaryDirectory() as tmp:
        report = soak(args, Path(tmp))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    print_report(report)
    print(f'\nreport: {args.output}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
