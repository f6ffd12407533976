# Copyright 2026 The patch_netvlad_ros Authors
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Camera frames too large to convert: the size limit and a header-only size check.

camera_batcher converts every frame to RGB at full size before resizing it to the
network's input (a few hundred pixels a side): the full-size copies are the frame's
cost. At 8000x8000 (64 MP) that is 183 MiB as RGB and, measured on the project's 2-core
VM, about 0.1 s to convert and 0.9-1.3 s to resize, so one such frame stalls the camera
callback for over a second while the 30 Hz frames behind it overflow the subscription's
queue. Frames above :data:`DEFAULT_MAX_PIXELS` (4096x4096, 48 MiB as RGB, about 0.3 s to
resize) are refused before they are decoded: for raw images from the message's width
and height, for JPEG and PNG from their headers (:func:`compressed_dimensions`), and for
other compressed formats after decoding.
"""

from typing import Optional, Tuple

from ..errors import ImageError

#: Default largest frame camera_batcher converts, in pixels (4096 x 4096).
DEFAULT_MAX_PIXELS = 4096 * 4096

_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
# JPEG start-of-frame markers (baseline, progressive, lossless, ...): C0-CF except DHT
# (C4), JPG (C8) and DAC (CC), which carry no frame size.
_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field.
_STANDALONE = set(range(0xD0, 0xD9)) | {0x01}


class OversizedImage(ImageError):
    """A frame larger than the configured limit."""


def _u16(mv: memoryview, i: int) -> int:
    return (mv[i] << 8) | mv[i + 1]


def _jpeg(mv: memoryview) -> Optional[Tuple[int, int]]:
    i = 2
    while i + 4 <= len(mv):
        if mv[i] != 0xFF:
            return None
        marker = mv[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _STANDALONE:
            i += 2
            continue
        if marker == 0xDA:  # start of scan before any frame header
            return None
        if marker in _SOF:
            if i + 9 > len(mv):
                return None
            return _u16(mv, i + 5), _u16(mv, i + 7)
        i += 2 + _u16(mv, i + 2)
    return None


def compressed_dimensions(data) -> Optional[Tuple[int, int]]:
    """Return (height, width) of a JPEG or PNG from its header, without decoding.

    data: the CompressedImage's bytes (bytes, bytearray, array or memoryview). None for
    other formats and for headers that cannot be read (the decoder then decides).
    """
    mv = memoryview(data).cast('B')
    if len(mv) >= 24 and mv[:8].tobytes() == _PNG_SIGNATURE and mv[12:16].tobytes() == b'IHDR':
        width = int.from_bytes(mv[16:20].tobytes(), 'big')
        height = int.from_bytes(mv[20:24].tobytes(), 'big')
        return height, width
    if len(mv) >= 4 and mv[0] == 0xFF and mv[1] == 0xD8:
        return _jpeg(mv)
    return None


def check_pixels(height: int, width: int, max_pixels: int, what: str = 'image') -> None:
    """Raise :class:`OversizedImage` when height x width exceeds max_pixels."""
    if height * width > max_pixels:
        raise OversizedImage(
            f'{what} of {width}x{height} ({height * width / 1e6:.1f} MP) exceeds '
            f'max_image_pixels = {max_pixels} ({max_pixels / 1e6:.1f} MP): converting it at '
            'full size would stall the camera callback; publish a downscaled image, or raise '
            'max_image_pixels if the camera really sends frames this large')
