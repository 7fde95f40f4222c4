"""The Status List encoding (draft-ietf-oauth-status-list, "Status List"): one status of
``bits`` bits per index, packed into a byte array from the least significant bit of each byte,
compressed with DEFLATE in the ZLIB format and carried as base64url without padding.

A leaf: it imports the JOSE layer's base64url only.

>>> statuses = StatusList.new(16)
>>> for idx in (0, 3, 4, 5, 7, 8, 9, 13, 15):
...     statuses[idx] = INVALID
>>> statuses.to_json()
{'bits': 1, 'lst': 'eNrbuRgAAhcBXQ'}
>>> StatusList.from_json({"bits": 1, "lst": "eNrbuRgAAhcBXQ"}, max_bytes=1024)[3]
1
"""

from __future__ import annotations

import typing as t
import zlib
from collections.abc import Mapping

from ..jose import JOSEError
from ..jose import b64decode
from ..jose import b64url

#: The status values the draft registers ("Status Types"); 0x03 and 0x0B to 0x0F are for
#: applications, the rest is reserved.
VALID: t.Final = 0x00
INVALID: t.Final = 0x01
SUSPENDED: t.Final = 0x02
#: The widths a list may use.
BITS: t.Final = (1, 2, 4, 8)


class StatusListError(ValueError):
    """A status list that cannot be read: wrong ``bits``, not base64url, not ZLIB, or larger
    than the caller's bound once decompressed. The message says which."""


class StatusList:
    """A byte array of statuses. ``len()`` is the number of indices it holds."""

    __slots__ = ("_mask", "bits", "data")

    def __init__(self, data: bytearray, bits: int = 1) -> None:
        if bits not in BITS:
            raise StatusListError(f"bits must be one of 1, 2, 4 or 8, not {bits!r}")
        self.bits = bits
        self.data = data
        self._mask = (1 << bits) - 1

    @classmethod
    def new(cls, size: int, bits: int = 1) -> StatusList:
        """A list of ``size`` indices (rounded up to whole bytes), every status ``VALID``."""
        if bits not in BITS:
            raise StatusListError(f"bits must be one of 1, 2, 4 or 8, not {bits!r}")
        return cls(bytearray(-(-size * bits // 8)), bits)

    def __len__(self) -> int:
        return len(self.data) * 8 // self.bits

    def __getitem__(self, idx: int) -> int:
        """The status at ``idx``. :raises IndexError: outside the list (the draft: a token
        whose index is out of bounds MUST be rejected)."""
        if idx < 0:
            raise IndexError(idx)
        position = idx * self.bits
        return (self.data[position >> 3] >> (position & 7)) & self._mask

    def __setitem__(self, idx: int, status: int) -> None:
        if idx < 0:
            raise IndexError(idx)
        if not 0 <= status <= self._mask:
            raise ValueError(f"status {status!r} does not fit in {self.bits} bits")
        position = idx * self.bits
        byte, shift = position >> 3, position & 7
        self.data[byte] = (self.data[byte] & ~(self._mask << shift)) | (status << shift)

    def compressed(self) -> bytes:
        """The byte array, DEFLATE in the ZLIB format at the highest level (the draft's
        recommendation)."""
        return zlib.compress(bytes(self.data), 9)

    def to_json(self) -> dict[str, t.Any]:
        """The ``status_list`` claim of a Status List Token: ``{"bits": …, "lst": …}``."""
        return {"bits": self.bits, "lst": b64url(self.compressed())}

    def to_cbor(self) -> dict[str, t.Any]:
        """The same claim for the CWT form (draft: "Status List in CBOR Format"): ``lst`` is
        the compressed bytes themselves, for a CBOR byte string."""
        return {"bits": self.bits, "lst": self.compressed()}

    @classmethod
    def from_json(cls, claim: object, *, max_bytes: int) -> StatusList:
        """Read a ``status_list`` claim. ``max_bytes`` bounds the byte array once decompressed
        (a few hundred bytes of DEFLATE can claim gigabytes).

        :raises StatusListError: with the reason.
        """
        if not isinstance(claim, Mapping):
            raise StatusListError("status_list is not a JSON object")
        bits, lst = claim.get("bits"), claim.get("lst")
        if type(bits) is not int or bits not in BITS:
            raise StatusListError("status_list.bits must be 1, 2, 4 or 8")
        if not isinstance(lst, str) or not lst:
            raise StatusListError("status_list.lst must be a non-empty string")
        try:
            compressed = b64decode(lst)
        except JOSEError:
            raise StatusListError("status_list.lst is not base64url") from None
        inflate = zlib.decompressobj()
        try:
            data = inflate.decompress(compressed, max_bytes + 1)
        except zlib.error:
            raise StatusListError("status_list.lst is not ZLIB data") from None
        if len(data) > max_bytes or inflate.unconsumed_tail:
            raise StatusListError(f"status_list.lst holds more than {max_bytes} bytes")
        if not inflate.eof:
            raise StatusListError("status_list.lst is truncated")
        return cls(bytearray(data), bits)
