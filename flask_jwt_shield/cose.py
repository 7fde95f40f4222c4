"""COSE single-signer messages (RFC 9052): ``COSE_Sign1`` and ``COSE_Mac0``, tagged, with
the algorithm and the type in the protected header and the key id in the unprotected one.

The signature bytes come from the key ring's own JOSE implementation: JWS and COSE agree
on them for every algorithm the shield signs with (ECDSA as the fixed-length ``r || s``,
RFC 9053 §2.1 and RFC 7518 §3.4; EdDSA, RSASSA-PSS with a salt as long as the hash,
RFC 8230 §2; RSASSA-PKCS1-v1_5, RFC 8812 §2; HMAC untruncated, RFC 9053 §3.1). Only the
bytes signed differ: COSE signs the CBOR ``Sig_structure`` / ``MAC_structure``.

A leaf beside the CBOR encoder.
"""

from __future__ import annotations

import typing as t

from .cbor import Tag
from .cbor import encode

__all__ = ["ALGORITHMS", "MAC_ALGORITHMS", "message"]

#: The COSE algorithm identifier of each JOSE algorithm name the shield signs with
#: (RFC 9053 §2.1, §2.2, §3.1; RFC 8230 §2; RFC 8812 §2).
ALGORITHMS: t.Final[dict[str, int]] = {
    "ES256": -7,
    "ES384": -35,
    "ES512": -36,
    "EdDSA": -8,
    "PS256": -37,
    "PS384": -38,
    "PS512": -39,
    "RS256": -257,
    "RS384": -258,
    "RS512": -259,
    "HS256": 5,
    "HS384": 6,
    "HS512": 7,
}
#: The algorithms that make a ``COSE_Mac0`` rather than a ``COSE_Sign1``.
MAC_ALGORITHMS: t.Final = frozenset({"HS256", "HS384", "HS512"})

#: Header labels (RFC 9052 §3.1; RFC 9596 §2 for ``typ``).
_ALG, _KID, _TYP = 1, 4, 16
#: CBOR tags of the tagged messages (RFC 9052 §2).
_SIGN1_TAG, _MAC0_TAG = 18, 17


def message(payload: bytes, *, alg: str, kid: str | None, typ: str, sign: t.Callable[[bytes], bytes]) -> bytes:
    """``payload`` as a tagged ``COSE_Sign1`` (``COSE_Mac0`` for an HMAC ``alg``), signed
    by ``sign`` (the key's JOSE signing function). Its protected header carries ``alg``
    and ``typ``, its unprotected header ``kid`` (as the bytes of its UTF-8 form).

    :raises KeyError: an ``alg`` COSE has no identifier for here.
    """
    protected = encode({_ALG: ALGORITHMS[alg], _TYP: typ})
    unprotected = {_KID: kid.encode("utf-8")} if kid is not None else {}
    mac = alg in MAC_ALGORITHMS
    # RFC 9052 §4.4 / §6.3: what is signed; no externally supplied data.
    to_be_signed = encode(["MAC0" if mac else "Signature1", protected, b"", payload])
    body = [protected, unprotected, payload, sign(to_be_signed)]
    return encode(Tag(_MAC0_TAG if mac else _SIGN1_TAG, body))
