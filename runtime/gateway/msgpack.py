"""Counting the values of a msgpack body before decoding it.

An 8 MiB body of empty arrays is eight million values: decoded, hundreds of MB and seconds.
`msgpack_elements` walks the headers only (strings, binaries and extensions such as numpy
arrays are skipped whole) and stops as soon as the count passes the limit.
"""

from __future__ import annotations

__all__ = ["msgpack_elements"]

# Header byte -> (bytes of length field, fixed payload bytes): strings, binaries, numbers.
_SIZED = {
    0xC4: (1, 0), 0xC5: (2, 0), 0xC6: (4, 0),  # bin 8/16/32
    0xC7: (1, 1), 0xC8: (2, 1), 0xC9: (4, 1),  # ext 8/16/32 (+ its type byte)
    0xD9: (1, 0), 0xDA: (2, 0), 0xDB: (4, 0),  # str 8/16/32
}  # fmt: skip
_FIXED = {
    0xCA: 4, 0xCB: 8,  # float 32/64
    0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8,  # uint 8..64
    0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8,  # int 8..64
    0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17,  # fixext 1..16 (+ its type byte)
}  # fmt: skip
_COUNTED = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}  # array/map 16/32


def msgpack_elements(data: bytes, limit: int) -> int:
    """The number of values in `data` (containers included), or a number past `limit` as
    soon as it is passed. A truncated document counts what it holds."""
    position, pending, count = 0, 1, 0
    size = len(data)
    while pending and position < size and count <= limit:
        pending -= 1
        count += 1
        position, children = _value(data, position)
        pending += children
    return count


def _value(data: bytes, position: int) -> tuple[int, int]:
    """Where the value at `position` ends (its children not included), and how many
    children follow it."""
    head = data[position]
    position += 1
    if head <= 0x7F or head >= 0xE0 or head in (0xC0, 0xC2, 0xC3):
        return position, 0
    if 0x80 <= head <= 0x8F:
        return position, 2 * (head & 0x0F)
    if 0x90 <= head <= 0x9F:
        return position, head & 0x0F
    if 0xA0 <= head <= 0xBF:
        return position + (head & 0x1F), 0
    if head in _SIZED:
        width, extra = _SIZED[head]
        length = int.from_bytes(data[position : position + width], "big")
        return position + width + extra + length, 0
    if head in _FIXED:
        return position + _FIXED[head], 0
    if head in _COUNTED:
        width, per_item = _COUNTED[head]
        return position + width, per_item * int.from_bytes(data[position : position + width], "big")
    return len(data), 0  # 0xC1 is never used: not msgpack, left to the decoder to say
