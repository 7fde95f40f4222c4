"""A minimal deterministic CBOR encoder (RFC 8949): what the CWT form of the Status List
Token needs, and nothing more. No decoder: the shield only writes CBOR.

Deterministic means RFC 8949 §4.2.1 ("Core Deterministically Encoded CBOR"): every integer
and length in its shortest form, definite lengths only, and a map's keys sorted by the bytes
of their own encoding. The same value therefore always encodes to the same bytes, which the
ETag and the signature rely on.

A leaf: it imports nothing from the package.

>>> encode({"lst": b"\\x01", "bits": 1}).hex()
'a2636c73744101646269747301'
>>> encode(Tag(18, [-7, "a"])).hex()
'd282266161'
"""

from __future__ import annotations

import dataclasses
import typing as t
from collections.abc import Mapping

__all__ = ["Tag", "encode"]

#: Major types (RFC 8949 §3.1).
_UNSIGNED, _NEGATIVE, _BYTES, _TEXT, _ARRAY, _MAP, _TAG = range(7)
_MAX = 1 << 64


@dataclasses.dataclass(frozen=True, slots=True)
class Tag:
    """A tagged data item (major type 6): ``number`` applied to ``value``."""

    number: int
    value: t.Any


def encode(value: t.Any) -> bytes:
    """``value`` as deterministic CBOR. Accepts ``int``, ``bytes``, ``str``, ``list`` and
    ``tuple`` (arrays), ``Mapping`` (maps) and :class:`Tag`.

    :raises TypeError: any other type (``bool``, ``float`` and ``None`` included: nothing the
        shield writes needs them).
    :raises ValueError: an integer outside CBOR's 64-bit range.
    """
    out = bytearray()
    _encode(value, out)
    return bytes(out)


def _head(major: int, argument: int, out: bytearray) -> None:
    # RFC 8949 §4.2.1: the argument in the shortest form that holds it.
    if argument < 24:
        out.append(major << 5 | argument)
    elif argument < 0x100:
        out.append(major << 5 | 24)
        out.append(argument)
    elif argument < 0x10000:
        out.append(major << 5 | 25)
        out += argument.to_bytes(2, "big")
    elif argument < 0x100000000:
        out.append(major << 5 | 26)
        out += argument.to_bytes(4, "big")
    elif argument < _MAX:
        out.append(major << 5 | 27)
        out += argument.to_bytes(8, "big")
    else:
        raise ValueError(f"CBOR integers hold 64 bits; {argument} does not fit")


def _encode(value: t.Any, out: bytearray) -> None:
    if isinstance(value, bool):  # before int: bool is an int in Python
        raise TypeError("this CBOR encoder writes no booleans")
    if isinstance(value, int):
        if value >= 0:
            _head(_UNSIGNED, value, out)
        else:
            _head(_NEGATIVE, -1 - value, out)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        _head(_BYTES, len(data), out)
        out += data
    elif isinstance(value, str):
        data = value.encode("utf-8")
        _head(_TEXT, len(data), out)
        out += data
    elif isinstance(value, (list, tuple)):
        _head(_ARRAY, len(value), out)
        for item in value:
            _encode(item, out)
    elif isinstance(value, Mapping):
        entries = sorted((encode(key), encode(item)) for key, item in value.items())
        _head(_MAP, len(entries), out)
        for key, item in entries:
            out += key
            out += item
    elif isinstance(value, Tag):
        _head(_TAG, value.number, out)
        _encode(value.value, out)
    else:
        raise TypeError(f"this CBOR encoder writes no {type(value).__name__}")
