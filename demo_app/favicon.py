"""The dashboard's favicon, drawn here (no image file): three node dots on a dark tile.

:func:`ico` is a Windows icon holding one 32x32 PNG (the form every browser reads at
``/favicon.ico``); both are built with the standard library only.
"""

from __future__ import annotations

import functools
import struct
import zlib

SIZE = 32
_TILE = (0x18, 0x20, 0x29)
#: two healthy nodes and one down, as the dashboard shows them
_DOTS = (
    ((9.5, 16.0), (0x2E, 0xA0, 0x43)),
    ((16.0, 16.0), (0x2E, 0xA0, 0x43)),
    ((22.5, 16.0), (0xF8, 0x51, 0x49)),
)
_RADIUS = 2.8
_CORNER = 6.0


def _inside_tile(x: float, y: float) -> bool:
    """Whether (x, y) is on the rounded square tile."""
    cx = min(max(x, _CORNER), SIZE - _CORNER)
    cy = min(max(y, _CORNER), SIZE - _CORNER)
    return (x - cx) ** 2 + (y - cy) ** 2 <= _CORNER**2


def _pixel(px: int, py: int) -> tuple[int, int, int, int]:
    """RGBA of one pixel, 4x4 supersampled so the edges are smooth."""
    acc = [0.0, 0.0, 0.0, 0.0]
    for sy in range(4):
        for sx in range(4):
            x, y = px + (sx + 0.5) / 4, py + (sy + 0.5) / 4
            if not _inside_tile(x, y):
                continue
            color = _TILE
            for (dx, dy), dot in _DOTS:
                if (x - dx) ** 2 + (y - dy) ** 2 <= _RADIUS**2:
                    color = dot
            for i in range(3):
                acc[i] += color[i]
            acc[3] += 255
    covered = acc[3] / 255
    if not covered:
        return (0, 0, 0, 0)
    return (round(acc[0] / covered), round(acc[1] / covered), round(acc[2] / covered), round(acc[3] / 16))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@functools.cache
def png() -> bytes:
    """The icon as a 32x32 RGBA PNG."""
    rows = b"".join(b"\x00" + b"".join(bytes(_pixel(x, y)) for x in range(SIZE)) for y in range(SIZE))
    header = struct.pack(">IIBBBBB", SIZE, SIZE, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows, 9))
        + _chunk(b"IEND", b"")
    )


@functools.cache
def ico() -> bytes:
    """The icon as an ICO file with the PNG as its one image."""
    image = png()
    directory = struct.pack("<BBBBHHII", SIZE, SIZE, 0, 0, 1, 32, len(image), 6 + 16)
    return struct.pack("<HHH", 0, 1, 1) + directory + image
