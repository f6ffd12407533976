# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Recorded drives: posed, keyframed images from a bag or from an image folder.

A drive is read in one streaming pass: every image gets the pose interpolated at its
stamp from the drive's pose source (no extrapolation; no pose across a gap longer than
``max_gap``), frames without a pose are dropped and counted, and a frame is kept when it
is a keyframe (travelled distance, heading change and/or time since the last keyframe).
Kept frames are resized to the network size at once and held (``hold_images=True``), so
memory grows with the number of keyframes at network resolution (0.9 MB each at 640x480),
not with the drive; or, for long drives, not held: :meth:`Drive.frame_images` then reads the
kept frames again from the source, decoding only those, and memory stays flat.

Pose sources: nav_msgs/Odometry, PoseStamped, PoseWithCovarianceStamped (their frame is
the map frame), or sensor_msgs/NavSatFix converted to a local ENU frame (x east, y north,
z up; REP 103/105) around an origin that the map keeps, so that query drives of the same
map use the same origin.

Pose convention: a drive's poses are either z-up (REP 103) or in the camera convention
(z forward, y down: KITTI odometry, many SLAM outputs); ``pose_convention='auto'`` tells
them apart from the trajectory (:func:`~.poses.detect_convention`; NavSatFix drives are
ENU, z up). The poses are kept as recorded; the convention decides what heading means
for ``min_heading`` keyframes and in evaluation, and is part of :meth:`Drive.summary`
(and so of a map's ``meta['drives']``).
"""

import csv
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .bags import BagFix, read_images, read_poses
from .poses import (check_convention, detect_convention, navsat_trajectory, PoseSample,
                    sample_to_z_up, select_keyframes, Trajectory, Z_UP)
from ..errors import ImageError, MapError
from ..model.image import check_image, load_image, resize_rgb

Origin = Tuple[float, float, float]
PathLike = Union[str, Path]


@dataclass
class KeyframeRule:
    """Keyframe thresholds relative to the last keyframe; all 0 keeps every frame."""

    min_distance: float = 0.0   # metres
    min_heading: float = 0.0    # radians
    min_interval: float = 0.0   # seconds

    def keep(self, last: Optional[PoseSample], pose: PoseSample) -> bool:
        """Whether ``pose`` is a keyframe after ``last`` (the first frame always is).

        Both poses z-up (:func:`~.poses.sample_to_z_up`): heading is yaw about +z.
        """
        if last is None:
            return True
        return select_keyframes([last, pose], self.min_distance, self.min_heading,
                                self.min_interval) == [0, 1]


@dataclass
class DriveFrame:
    """A kept frame: where it came from, its pose, and the image at network size."""

    index: int           # index among the drive's images
    stamp: float
    frame_id: str
    source: str          # 'bag.mcap:/camera/image_raw#12' or the image file name
    pose: PoseSample
    rgb: Optional[np.ndarray]   # [H, W, 3] uint8 at the network size; None: not held


@dataclass
class Drive:
    """Kept frames of a drive plus what was dropped and why."""

    name: str
    frames: List[DriveFrame] = field(default_factory=list)
    origin: Optional[Origin] = None   # ENU origin (lat, lon, alt) of a NavSatFix source
    images: int = 0
    no_pose: int = 0
    not_keyframe: int = 0
    invalid: int = 0
    #: 'z-up' or 'camera' (see :data:`~.poses.POSE_CONVENTIONS`), and why
    pose_convention: str = Z_UP
    convention_reason: str = ''
    #: reads the images of the given kept frames again from the source, in order, at
    #: network size (readers set it; used for frames whose images are not held)
    reread: Optional[Callable[[Sequence[DriveFrame]], Iterator[np.ndarray]]] = field(
        default=None, repr=False, compare=False)
    #: where the recorded images are: (bag path, image topic) of a bag drive, (image
    #: folder, '') of a folder drive; graph replay publishes them as recorded
    raw_source: Optional[Tuple[str, str]] = field(default=None, repr=False, compare=False)

    def summary(self) -> Dict[str, Union[int, str]]:
        """Return the counts and the pose convention, for logs, reports and map metadata."""
        return {'images': self.images, 'kept': len(self.frames), 'no_pose': self.no_pose,
                'not_keyframe': self.not_keyframe, 'invalid': self.invalid,
                'pose_convention': self.pose_convention}

    def frame_images(self) -> Iterator[np.ndarray]:
        """Yield the kept frames' images [H, W, 3] uint8 at network size, in order.

        Held images come from memory; the others are read again from the source. A
        source that no longer gives a kept frame (changed or truncated since the drive was
        read) raises MapError.
        """
        missing = [f for f in self.frames if f.rgb is None]
        if missing and self.reread is None:
            raise MapError(f'drive {self.name}: {len(missing)} frames hold no image and the '
                           'drive has no source to read them from')
        again = iter(self.reread(missing)) if missing else iter(())
        for frame in self.frames:
            if frame.rgb is not None:
                yield frame.rgb
                continue
            rgb = next(again, None)
            if rgb is None:
                raise MapError(f'drive {self.name}: frame {frame.source} cannot be read '
                               'again: the source changed since the drive was read')
            yield rgb


def bag_trajectory(path: PathLike, pose_topic: str,
                   origin: Optional[Origin] = None) -> Tuple[Trajectory, Optional[Origin]]:
    """Trajectory of a bag's pose topic; NavSatFix -> ENU around ``origin`` (or the first fix).

    Returns the trajectory and the ENU origin (None for metric pose sources).
    """
    poses = read_poses(path, pose_topic)
    if not poses:
        raise MapError(f'{path}: pose topic {pose_topic} has no messages')
    if isinstance(poses[0], BagFix):
        fixes = [f for f in poses if f.status >= 0]  # NavSatStatus.STATUS_NO_FIX = -1
        if not fixes:
            raise MapError(f'{path}: every NavSatFix on {pose_topic} has status NO_FIX')
        return navsat_trajectory([f.stamp for f in fixes], [f.latitude for f in fixes],
                                 [f.longitude for f in fixes], [f.altitude for f in fixes],
                                 origin=origin)
    return Trajectory([PoseSample(p.stamp, p.x, p.y, p.z, p.qx, p.qy, p.qz, p.qw)
                       for p in poses], frame_id=poses[0].frame_id), None


def resolve_convention(drive: Drive, trajectory: Trajectory, requested: str) -> None:
    """Set the drive's pose convention: requested ('auto', 'z-up' or 'camera').

    'auto' detects it from the trajectory (:func:`~.poses.detect_convention`); a GNSS drive
    (ENU) is z-up and refuses 'camera'.
    """
    if requested != 'auto':
        check_convention(requested)
    if drive.origin is not None:
        if requested not in ('auto', Z_UP):
            raise MapError(f'drive {drive.name}: NavSatFix poses are ENU (x east, y north, '
                           f'z up); pose convention {requested!r} does not apply to them')
        drive.pose_convention, drive.convention_reason = Z_UP, 'NavSatFix poses are ENU'
    elif requested == 'auto':
        drive.pose_convention, drive.convention_reason = detect_convention(
            trajectory.positions, trajectory.quaternions, trajectory.frame_id)
    else:
        drive.pose_convention, drive.convention_reason = requested, 'as requested'


def meta_convention(meta: Dict) -> Optional[str]:
    """Return the pose convention a map's drives were read with (``meta['drives']``).

    None for maps whose drives do not say (built before conventions were recorded);
    MapError when they disagree (a map has one frame).
    """
    kept = {d['pose_convention'] for d in meta.get('drives', []) if d.get('pose_convention')}
    if len(kept) > 1:
        raise MapError(f"the map's drives were read with different pose conventions "
                       f'({", ".join(sorted(kept))}); rebuild it with one')
    return kept.pop() if kept else None


def check_reading_options(max_gap: float, rule: KeyframeRule, pose_convention: str) -> None:
    """Raise MapError for a reading option out of range, before anything is read."""
    if not (max_gap >= 0.0):  # also NaN
        raise MapError(f'max_gap must be >= 0 seconds, got {max_gap}')
    select_keyframes([], rule.min_distance, rule.min_heading, rule.min_interval)
    if pose_convention != 'auto':
        check_convention(pose_convention)


def _collect(drive: Drive, items: Iterator[Tuple[int, float, str, str, np.ndarray]],
             trajectory: Trajectory, size: Tuple[int, int], rule: KeyframeRule,
             max_gap: float, progress: Optional[Callable[[int], None]],
             hold_images: bool, invalid: Callable[[int, str], None]) -> Drive:
    last: Optional[PoseSample] = None   # z-up, for the keyframe rule
    for index, stamp, frame_id, source, rgb in items:
        drive.images += 1
        if progress is not None:
            progress(1)
        try:   # here, not at the second read of a drive that holds no images
            check_image(rgb)
        except ImageError as exc:
            invalid(index, f'{source}: {exc}')
            continue
        pose = trajectory.interpolate(stamp, max_gap)
        if pose is None:
            drive.no_pose += 1
            continue
        up = sample_to_z_up(pose, drive.pose_convention)
        if not rule.keep(last, up):
            drive.not_keyframe += 1
            continue
        last = up
        drive.frames.append(DriveFrame(index, stamp, frame_id, source, pose,
                                       resize_rgb(rgb, *size) if hold_images else None))
    return drive


def read_bag_drive(path: PathLike, image_topic: str, pose_topic: str,
                   size: Tuple[int, int], rule: KeyframeRule = KeyframeRule(),
                   max_gap: float = 0.5, origin: Optional[Origin] = None,
                   progress: Optional[Callable[[int], None]] = None,
                   on_error: Optional[Callable[[int, str], None]] = None,
                   hold_images: bool = True, pose_convention: str = 'auto') -> Drive:
    """Read a bag drive: posed keyframes at ``size`` = (height, width).

    hold_images: keep the keyframes' images in memory; False: :meth:`Drive.frame_images`
    reads them from the bag again (one more pass that decodes only the keyframes).
    pose_convention: 'auto', 'z-up' or 'camera' (see :func:`resolve_convention`).
    """
    check_reading_options(max_gap, rule, pose_convention)
    trajectory, origin = bag_trajectory(path, pose_topic, origin)
    name = Path(path).name
    drive = Drive(name, origin=origin)
    resolve_convention(drive, trajectory, pose_convention)

    def invalid(index: int, message: str) -> None:
        drive.invalid += 1
        if on_error is not None:
            on_error(index, message)

    def reread(frames: Sequence[DriveFrame]) -> Iterator[np.ndarray]:
        images = read_images(path, image_topic, True, lambda *_: None,
                             {f.index for f in frames})
        for frame in frames:
            im = next(images, None)
            if im is None or im.index != frame.index:
                return                              # Drive.frame_images reports the frame
            yield resize_rgb(im.rgb, *size)

    drive.reread = reread
    drive.raw_source = (str(path), image_topic)
    items = ((im.index, im.stamp, im.frame_id, f'{name}:{image_topic}#{im.index}', im.rgb)
             for im in read_images(path, image_topic, skip_invalid=True, on_error=invalid))
    return _collect(drive, items, trajectory, size, rule, max_gap, progress, hold_images,
                    invalid)


POSES_COLUMNS = ('image', 'stamp', 'x', 'y', 'z', 'qx', 'qy', 'qz', 'qw')


def read_folder_drive(folder: PathLike, poses_file: PathLike, size: Tuple[int, int],
                      rule: KeyframeRule = KeyframeRule(),
                      progress: Optional[Callable[[int], None]] = None,
                      on_error: Optional[Callable[[int, str], None]] = None,
                      hold_images: bool = True, pose_convention: str = 'auto') -> Drive:
    """Read an image folder with a poses CSV: one row per image.

    hold_images: as for :func:`read_bag_drive` (False: images are loaded again by name).
    pose_convention: 'auto', 'z-up' or 'camera' (see :func:`resolve_convention`).

    Columns: ``image`` (file name in the folder), ``stamp`` (s), ``x, y`` and optionally
    ``z, qx, qy, qz, qw`` (metres, unit quaternion; default 0 and identity), in the map
    frame. Rows are taken in stamp order; every image has its own pose, so nothing is
    interpolated.
    """
    folder, poses_file = Path(folder), Path(poses_file)
    check_reading_options(0.0, rule, pose_convention)
    if not folder.is_dir():
        raise MapError(f'image folder {folder} does not exist')
    if not poses_file.is_file():
        raise MapError(f'poses file {poses_file} does not exist')
    with open(poses_file, newline='') as handle:
        rows = list(csv.DictReader(handle))
    missing = [c for c in ('image', 'stamp', 'x', 'y') if rows and c not in rows[0]]
    if not rows or missing:
        raise MapError(f'{poses_file}: needs a header with columns image, stamp, x, y '
                       f'(optional z, qx, qy, qz, qw) and one row per image; missing '
                       f'{missing or "rows"}')
    try:
        samples = [PoseSample(float(r['stamp']), float(r['x']), float(r['y']),
                              float(r.get('z') or 0.0), float(r.get('qx') or 0.0),
                              float(r.get('qy') or 0.0), float(r.get('qz') or 0.0),
                              float(r.get('qw') or 1.0)) for r in rows]
    except ValueError as exc:
        raise MapError(f'{poses_file}: a value is not a number: {exc}') from None
    order = np.argsort([s.stamp for s in samples], kind='stable')
    trajectory = Trajectory(samples)
    drive = Drive(folder.name)
    resolve_convention(drive, trajectory, pose_convention)

    def invalid(index: int, message: str) -> None:
        drive.invalid += 1
        if on_error is not None:
            on_error(index, message)

    def items():
        for index, i in enumerate(order):
            name = rows[i]['image']
            try:
                rgb = load_image(folder / name)
            except ImageError as exc:
                invalid(index, str(exc))
                continue
            yield index, samples[i].stamp, 'camera', name, rgb

    def reread(frames: Sequence[DriveFrame]) -> Iterator[np.ndarray]:
        for frame in frames:
            try:
                yield resize_rgb(load_image(folder / frame.source), *size)
            except ImageError:
                return                              # Drive.frame_images reports it

    drive.reread = reread
    drive.raw_source = (str(folder), '')
    return _collect(drive, items(), trajectory, size, rule, 0.0, progress, hold_images,
                    invalid)


def frames_in_z_up(frames: Sequence[DriveFrame], convention: str) -> List[DriveFrame]:
    """Return the frames with their poses as z-up poses (:func:`~.poses.sample_to_z_up`).

    Images, stamps and sources are the same; for evaluation, whose ground plane is x-y
    and whose heading is yaw about +z.
    """
    check_convention(convention)
    return [replace(f, pose=sample_to_z_up(f.pose, convention)) for f in frames]


def positions_of(frames: Sequence[DriveFrame]) -> np.ndarray:
    """[N, 3] positions of frames."""
    return np.array([[f.pose.x, f.pose.y, f.pose.z] for f in frames]).reshape(-1, 3)
