# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""bench_graph: the ROS graph's latency and throughput, and descriptor transport cost.

Two parts, per preset, printed as tables and written as JSON:
- transport: bytes of one frame's PlaceDescriptors and the time to pack, serialize,
  deserialize and unpack it, and to deliver it over DDS between two nodes (rclpy has no
  intra-process path, so even one process pays the DDS copy), for float32 and float16
  patches and for 'shared' (patches kept in process memory, only a key sent);
- end to end: the three nodes in one process on a MultiThreadedExecutor, real corridor
  images published as sensor_msgs/Image at a fixed camera rate; latency from publishing
  the image to receiving ~/match (p50, p95), frames answered per second, frames dropped.
Transport uses ImageNet VGG16 with seeded NetVLAD/WPCA weights (its timings do not depend
on the weights). End to end uses the model bootstrapped from the corridor references (built
once per preset and image size, about 7 minutes at 640x480, then cached): the exact
screened matcher's speed depends on the descriptors, and seeded weights make them nearly
parallel, which sends every candidate to the float32 path. Maps are built from corridor
references at the benchmark's image size.
"""

import argparse
import json
from pathlib import Path
import platform
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional

import numpy as np

from patch_netvlad_ros.cli.common import (image_size, output_file, positive_float, positive_int,
                                          progress_bar, run_main)

PRESET_NAMES = ('performance', 'speed', 'storage')


def _percentiles(values: List[float]) -> Dict[str, float]:
    if not values:
        return {'p50': float('nan'), 'p95': float('nan')}
    return {'p50': float(np.percentile(values, 50)), 'p95': float(np.percentile(values, 95))}


def transport(preset: str, size, repeats: int) -> List[Dict]:
    """Cost of one frame's descriptor message for each patch representation."""
    from patch_netvlad_ros_interfaces.msg import PlaceDescriptors
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.serialization import deserialize_message, serialize_message
    import torch

    from patch_netvlad_ros.core.config import get_config
    from patch_netvlad_ros.ros import shared_store
    from patch_netvlad_ros.ros.conversions import descriptors_to_msg, msg_to_descriptors
    from patch_netvlad_ros.ros.qos import pipeline_qos
    from std_msgs.msg import Header

    cfg = get_config(preset, image_height=size[0], image_width=size[1])
    gen = torch.Generator().manual_seed(0)
    g = torch.nn.functional.normalize(torch.randn(cfg.num_pcs, generator=gen), dim=0)
    patches = [torch.nn.functional.normalize(
        torch.randn(cfg.num_patches(i), cfg.num_pcs, generator=gen), dim=1)
        for i in range(len(cfg.patch_sizes))]
    rows = []
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        sender, receiver = Node('bench_sender', context=ctx), Node('bench_receiver', context=ctx)
        got: List[float] = []
        receiver.create_subscription(PlaceDescriptors, '/bench_descriptors',
                                     lambda m: got.append(time.perf_counter()), pipeline_qos(4))
        pub = sender.create_publisher(PlaceDescriptors, '/bench_descriptors', pipeline_qos(4))
        executor = SingleThreadedExecutor(context=ctx)
        executor.add_node(receiver)
        spin = threading.Thread(target=executor.spin, daemon=True)
        spin.start()
        end = time.monotonic() + 10
        while pub.get_subscription_count() == 0 and time.monotonic() < end:
            time.sleep(0.05)
        for mode in ('float32', 'float16', 'shared'):
            t = {'pack': [], 'serialize': [], 'deserialize': [], 'unpack': [], 'dds': []}
            for _ in range(repeats + 1):
                t0 = time.perf_counter()
                key = shared_store.put(patches) if mode == 'shared' else ''
                msg = descriptors_to_msg(Header(), cfg, 'digest', g, patches,
                                         'float32' if mode == 'shared' else mode, key)
                t1 = time.perf_counter()
                data = serialize_message(msg)
                t2 = time.perf_counter()
                back = deserialize_message(data, PlaceDescriptors)
                t3 = time.perf_counter()
                msg_to_descriptors(back, shared_store.take(key) if key else None)
                t4 = time.perf_counter()
                count = len(got)
                sent = time.perf_counter()
                pub.publish(msg)
                end = time.monotonic() + 30
                while len(got) == count and time.monotonic() < end:
                    time.sleep(0.0005)
                dds = got[-1] - sent if len(got) > count else float('nan')
                for name, value in zip(t, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, dds)):
                    t[name].append(value * 1e3)
            row = {'preset': preset, 'mode': mode, 'bytes': len(data)}
            row.update({f'{k}_ms': float(np.median(v[1:])) for k, v in t.items()})
            # Publishing serializes and delivery deserializes: the real path per frame is
            # pack + DDS (publish -> callback) + unpack.
            row['total_ms'] = row['pack_ms'] + row['dds_ms'] + row['unpack_ms']
            rows.append(row)
        executor.shutdown()
        sender.destroy_node()
        receiver.destroy_node()
    finally:
        ctx.try_shutdown()
    return rows


def corridor_bench_map(preset: str, size, map_size: int, workdir: Path):
    """Build a map of ``map_size`` corridor references (cycled) at ``size``.

    The model is the bootstrapped corridor model (built once per preset and size, then
    cached). Returns (map folder, model checkpoint).
    """
    from patch_netvlad_ros.core.config import get_config
    from patch_netvlad_ros.core.maps.database import Reference
    from patch_netvlad_ros.core.drives.datasets import corridor
    from patch_netvlad_ros.core.maps.extraction import build_reference_map
    from patch_netvlad_ros.core.model.image import load_image
    from patch_netvlad_ros.core.maps.models import corridor_model

    cfg = get_config(preset, image_height=size[0], image_width=size[1])
    model, ckpt = corridor_model(cfg, log=lambda m: print(m, file=sys.stderr),
                                 progress=progress_bar(0, f'{preset}: bootstrap'))
    data = corridor()
    refs = [load_image(data.references[i % len(data.references)]) for i in range(map_size)]
    ref_map = build_reference_map(model, refs, [Reference(id=f'{i:07d}', x=float(i))
                                                for i in range(map_size)],
                                  progress=progress_bar(map_size, f'{preset}: map'))
    return ref_map.save(workdir / f'{preset}_map'), ckpt


def end_to_end(preset: str, size, frames: int, rate: float, map_size: int, batch: int,
               precision: str, workdir: Path) -> Dict:
    """Latency and throughput of the in-process graph at a camera rate.

    The replay of :mod:`patch_netvlad_ros.ros.replay` plays rgb8 frames already at the
    network size (the network's cost, not the conversion's); the batcher keeps its
    default buffer, so a camera faster than the graph shows up as drops, by reason.
    """
    from std_msgs.msg import Header

    from patch_netvlad_ros.core.drives.datasets import corridor
    from patch_netvlad_ros.core.model.image import load_image, resize_rgb
    from patch_netvlad_ros.ros.conversions import rgb_to_image
    from patch_netvlad_ros.ros.replay import frames_of, replay_through_graph

    map_path, ckpt = corridor_bench_map(preset, size, map_size, workdir)
    data = corridor()
    messages = []
    for i in range(frames):  # camera frames at `rate` Hz, already at the network size
        stamp = 1.0 + i / rate
        header = Header(frame_id='camera')
        header.stamp.sec, header.stamp.nanosec = int(stamp), int(round(stamp % 1 * 1e9))
        rgb = resize_rgb(load_image(data.queries[(7 * i) % len(data.queries)]), *size)
        messages.append(rgb_to_image(rgb, header))
    record = replay_through_graph(
        # The stamps are the camera's: replayed at 1x the recorded pace, they come at rate.
        frames_of(messages), False, str(map_path), str(ckpt), preset, size, 1.0,
        processes='one', batcher_params={'batch_size': batch},
        descriptor_params={'precision': precision})
    answers = [(arrived - record.published[key], msg)
               for key, (msg, arrived) in record.matches.items()]
    ledger = record.ledger or {}
    first = min(record.published.values())
    last = max((arrived for _, arrived in record.matches.values()), default=first)
    return {'preset': preset, 'precision': precision, 'camera_hz': rate, 'frames': frames,
            'answered': len(answers), 'dropped': ledger.get('dropped_total'),
            'dropped_by_reason': ledger.get('dropped'),
            'lost_before_batcher': frames - ledger.get('received', 0),
            'batch_size': batch, 'map_size': map_size,
            'latency_ms': _percentiles([1e3 * a[0] for a in answers]),
            'node_latency_ms': _percentiles([a[1].latency_ms for a in answers]),
            'extraction_ms': _percentiles([a[1].extraction_ms for a in answers]),
            'retrieval_ms': _percentiles([a[1].retrieval_ms for a in answers]),
            'rerank_ms': _percentiles([a[1].rerank_ms for a in answers]),
            'throughput_hz': len(answers) / (last - first) if last > first else 0.0}


@run_main
def main(argv: Optional[list] = None) -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--presets', nargs='+', choices=PRESET_NAMES, default=list(PRESET_NAMES))
    parser.add_argument('--image-size', type=image_size, default=(480, 640), metavar='WxH',
                        help='network input size (default 640x480)')
    parser.add_argument('--frames', type=positive_int, default=12, help='camera frames per preset')
    parser.add_argument('--rate', type=positive_float, default=1.0, help='camera rate in Hz')
    parser.add_argument('--map-size', type=positive_int, default=30, help='references in each map')
    parser.add_argument('--batch', type=positive_int, default=4, help='camera_batcher batch_size')
    parser.add_argument('--precision', default='fp32', choices=('fp32', 'bf16', 'fp16'))
    parser.add_argument('--repeats', type=positive_int, default=5, help='transport repeats')
    parser.add_argument('--skip-e2e', action='store_true', help='transport part only')
    parser.add_argument('--output', type=output_file, default='out/bench_graph.json')
    args = parser.parse_args(argv)
    report = {'machine': {'cpu': platform.processor() or platform.machine(),
                          'python': platform.python_version()},
              'image_size': list(args.image_size), 'transport': [], 'end_to_end': []}
    try:
        import torch
        report['machine']['cuda'] = (torch.cuda.get_device_name(0)
                                     if torch.cuda.is_available() else None)
        report['machine']['threads'] = torch.get_num_threads()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    for preset in args.presets:
        report['transport'] += transport(preset, args.image_size, args.repeats)
    print(f'\ndescriptor transport per frame at {args.image_size[1]}x{args.image_size[0]} '
          '(median ms; total = pack + DDS + unpack, DDS includes (de)serialization)')
    head = ('preset', 'patches', 'bytes', 'pack', 'serialize', 'deserial.', 'unpack', 'DDS',
            'total')
    print(''.join(f'{h:>12s}' for h in head))
    for r in report['transport']:
        cells = [r[k + '_ms'] for k in ('pack', 'serialize', 'deserialize', 'unpack', 'dds',
                                        'total')]
        print(f'{r["preset"]:>12s}{r["mode"]:>12s}{r["bytes"]:>12d}'
              + ''.join(f'{c:>12.2f}' for c in cells))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if not args.skip_e2e:
        with tempfile.TemporaryDirectory() as tmp:
            for preset in args.presets:
                report['end_to_end'].append(end_to_end(
                    preset, args.image_size, args.frames, args.rate, args.map_size,
                    args.batch, args.precision, Path(tmp)))
                args.output.write_text(json.dumps(report, indent=2))
        print(f'\nend to end, camera -> ~/match, {args.frames} frames at {args.rate} Hz, '
              f'batch {args.batch}, {args.precision}, maps of {args.map_size} references')
        head = ('preset', 'answered', 'dropped', 'p50 ms', 'p95 ms', 'extract ms',
                'rerank ms', 'frames/s')
        print(''.join(f'{h:>12s}' for h in head))
        for r in report['end_to_end']:
            print(f'{r["preset"]:>12s}{r["answered"]:>12d}{r["dropped"]:>12d}'
                  f'{r["latency_ms"]["p50"]:>12.0f}{r["latency_ms"]["p95"]:>12.0f}'
                  f'{r["extraction_ms"]["p50"]:>12.0f}{r["rerank_ms"]["p50"]:>12.0f}'
                  f'{r["throughput_hz"]:>12.2f}')
    args.output.write_text(json.dumps(report, indent=2))
    print(f'\nreport: {args.output}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
