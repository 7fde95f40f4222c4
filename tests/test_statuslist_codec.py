"""The Status List encoding against the draft's own examples (draft-ietf-oauth-status-list,
"Status List" and the examples of its appendix)."""

from __future__ import annotations

import gzip
import random
import zlib

import pytest

from flask_jwt_shield.jose import b64url
from flask_jwt_shield.statuslist.codec import INVALID
from flask_jwt_shield.statuslist.codec import StatusList
from flask_jwt_shield.statuslist.codec import StatusListError

# The draft's one-bit example: 16 statuses, byte array [0xB9, 0xA3].
ONE_BIT = [1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1]
# The draft's two-bit example: 12 statuses, byte array [0xC9, 0x44, 0xF9].
TWO_BITS = [1, 2, 0, 3, 0, 1, 0, 1, 1, 2, 3, 3]
# The "long" examples: 2**20 indices, these set.
LONG = {
    0: 1,
    1993: 1,
    25460: 1,
    159495: 1,
    495669: 1,
    554353: 1,
    645645: 1,
    723232: 1,
    854545: 1,
    934534: 1,
    1000345: 1,
}


def build(statuses: list[int], bits: int) -> StatusList:
    lst = StatusList.new(len(statuses), bits)
    for idx, status in enumerate(statuses):
        lst[idx] = status
    return lst


def test_the_drafts_one_bit_example() -> None:
    lst = build(ONE_BIT, 1)
    assert bytes(lst.data) == bytes([0xB9, 0xA3])
    assert lst.to_json() == {"bits": 1, "lst": "eNrbuRgAAhcBXQ"}
    read = StatusList.from_json({"bits": 1, "lst": "eNrbuRgAAhcBXQ"}, max_bytes=16)
    assert [read[i] for i in range(16)] == ONE_BIT and len(read) == 16


def test_the_drafts_two_bit_example() -> None:
    lst = build(TWO_BITS, 2)
    assert bytes(lst.data) == bytes([0xC9, 0x44, 0xF9])
    assert lst.to_json() == {"bits": 2, "lst": "eNo76fITAAPfAgc"}
    read = StatusList.from_json({"bits": 2, "lst": "eNo76fITAAPfAgc"}, max_bytes=16)
    assert [read[i] for i in range(12)] == TWO_BITS


def test_the_drafts_long_example_reads_back() -> None:
    lst = StatusList.new(2**20)
    for idx, status in LONG.items():
        lst[idx] = status
    read = StatusList.from_json(lst.to_json(), max_bytes=2**17)
    assert {i for i in range(2**20) if read[i]} == set(LONG)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_every_width_round_trips(bits: int) -> None:
    rng = random.Random(bits)
    statuses = [rng.randrange(1 << bits) for _ in range(1001)]
    read = StatusList.from_json(build(statuses, bits).to_json(), max_bytes=1024)
    assert [read[i] for i in range(1001)] == statuses


def test_setting_one_index_leaves_its_neighbours() -> None:
    lst = build([3, 3, 3, 3], 2)
    lst[1] = 0
    assert [lst[i] for i in range(4)] == [3, 0, 3, 3]


def test_an_index_outside_the_list_is_an_error() -> None:
    lst = StatusList.new(16)
    with pytest.raises(IndexError):
        lst[16]
    with pytest.raises(IndexError):
        lst[-1]


def test_a_million_tokens_with_one_percent_revoked_fit_in_16_kb() -> None:
    """DEFLATE brings the 125,000-byte array to about 14 KB; base64url adds a third, which
    HTTP compression (the Status Provider answers gzip when asked) takes back off."""
    rng = random.Random(7)
    lst = StatusList.new(1_000_000)
    for idx in rng.sample(range(1_000_000), 10_000):
        lst[idx] = INVALID
    assert len(lst.compressed()) < 15_000
    assert len(gzip.compress(lst.to_json()["lst"].encode(), 9)) < 15_000


@pytest.mark.parametrize(
    ("claim", "reason"),
    [
        ("x", "not a JSON object"),
        ({"bits": 3, "lst": "eNrbuRgAAhcBXQ"}, "bits"),
        ({"bits": True, "lst": "eNrbuRgAAhcBXQ"}, "bits"),
        ({"bits": 1, "lst": 5}, "lst must be"),
        ({"bits": 1, "lst": "eNrbuRgAAhcBXQ=="}, "base64url"),
        ({"bits": 1, "lst": b64url(b"not zlib")}, "ZLIB"),
        ({"bits": 1, "lst": b64url(zlib.compress(bytes(100))[:-6])}, "truncated"),
    ],
)
def test_a_bad_status_list_is_refused_with_its_reason(claim: object, reason: str) -> None:
    with pytest.raises(StatusListError, match=reason):
        StatusList.from_json(claim, max_bytes=1024)


def test_attack_a_decompression_bomb_is_refused_at_the_bound() -> None:
    bomb = b64url(zlib.compress(bytes(50_000_000), 9))  # about 50 KB that inflate to 50 MB
    assert len(bomb) < 100_000
    with pytest.raises(StatusListError, match="more than 1048576 bytes"):
        StatusList.from_json({"bits": 1, "lst": bomb}, max_bytes=1 << 20)
