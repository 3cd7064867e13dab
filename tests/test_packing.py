import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ptqtp.formats.packing import base3_digits, invalid_bytes, pack_trits, packed_width, unpack_trits


def test_layout_matches_spec_by_hand():
    # trits j = 0..3 in one byte, least significant first: +1, -1, 0, +1 -> 01 11 00 01
    t = torch.tensor([1, -1, 0, 1], dtype=torch.int8)
    assert pack_trits(t).tolist() == [0b01_00_11_01]


def test_base3_layout_by_hand():
    # trits +1, -1, 0, +1, -1 -> digits 1, 2, 0, 1, 2 (trit 0 most significant): 81 + 54 + 0 + 3 + 2
    t = torch.tensor([1, -1, 0, 1, -1, 1], dtype=torch.int8)
    assert pack_trits(t, "base3").tolist() == [140, 81]  # remainder: trit 5 then four zero digits
    assert packed_width(6, "base3") == 2 and packed_width(640, "base3") == 128 and packed_width(1536, "base3") == 308


def test_base3_fixed_point_decode_is_base3():
    # the golden decode (the hardware's shift-and-add arithmetic) against plain integer division
    q = np.arange(243)
    expect = [(q // 3 ** (4 - i)) % 3 for i in range(5)]
    assert all(np.array_equal(d, e) for d, e in zip(base3_digits(q), expect))


def test_base3_fixed_point_margin_is_needed():
    # the reciprocal 135 / 2^15 is the one that works: 134 (just below 1/243) fails somewhere
    q = np.arange(243)
    f = q * 134
    digits = []
    for _ in range(5):
        f = f * 3
        digits.append(f >> 15)
        f &= 0x7FFF
    assert not all(np.array_equal(d, (q // 3 ** (4 - i)) % 3) for i, d in enumerate(digits))


@pytest.mark.parametrize("packing", ["2bit", "base3"])
@pytest.mark.parametrize("shape", [(4,), (3, 8), (2, 5, 128), (2, 3, 640)])
def test_round_trip_and_inputs_untouched(shape, packing):
    t = torch.randint(-1, 2, shape, dtype=torch.int8, generator=torch.Generator().manual_seed(0))
    before = t.clone()
    packed = pack_trits(t, packing)
    assert packed.dtype == torch.uint8 and packed.shape == (*shape[:-1], packed_width(shape[-1], packing))
    p_before = packed.clone()
    assert torch.equal(unpack_trits(packed, packing, shape[-1]), t)
    assert torch.equal(t, before) and torch.equal(packed, p_before)
    # NumPy in, NumPy out, the same bytes
    assert np.array_equal(pack_trits(t.numpy(), packing), packed.numpy())
    assert np.array_equal(unpack_trits(packed.numpy(), packing, shape[-1]), t.numpy())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-1, 1), min_size=1, max_size=64))
def test_base3_round_trip_any_length(values):
    t = torch.tensor(values, dtype=torch.int8)
    packed = pack_trits(t, "base3")
    assert bool((packed < 243).all())
    assert torch.equal(unpack_trits(packed, "base3", len(values)), t)


def test_every_byte_decodes_or_is_rejected():
    for b in range(256):
        fields = [(b >> s) & 3 for s in (0, 2, 4, 6)]
        packed = torch.tensor([b], dtype=torch.uint8)
        if 0b10 in fields:
            with pytest.raises(ValueError, match="invalid trit code 0b10"):
                unpack_trits(packed)
        else:
            expect = [{0: 0, 1: 1, 3: -1}[f] for f in fields]
            assert unpack_trits(packed).tolist() == expect
            assert pack_trits(unpack_trits(packed)).tolist() == [b]


def test_every_base3_byte_decodes_or_is_rejected():
    for b in range(256):
        packed = torch.tensor([[b]], dtype=torch.uint8)
        if b >= 243:
            assert invalid_bytes(packed, "base3").tolist() == [[0, 0]]
            with pytest.raises(ValueError, match=f"base-3 byte {b}"):
                unpack_trits(packed, "base3")
        else:
            trits = unpack_trits(packed, "base3")
            assert sum((int(t) % 3) * 3 ** (4 - i) for i, t in enumerate(trits[0])) == b
            assert pack_trits(trits, "base3").tolist() == [[b]]


def test_base3_remainder_must_be_zero():
    packed = pack_trits(torch.tensor([1, 0, 0, 0, 1], dtype=torch.int8), "base3")
    with pytest.raises(ValueError, match="remainder"):
        unpack_trits(packed, "base3", 4)
    with pytest.raises(ValueError, match="do not hold a row of 9"):
        unpack_trits(packed, "base3", 9)


@pytest.mark.parametrize(
    "bad,packing,err",
    [
        (torch.tensor([2, 0, 0, 0], dtype=torch.int8), "2bit", ValueError),
        (torch.zeros(6, dtype=torch.int8), "2bit", ValueError),
        (torch.zeros(4, dtype=torch.int32), "2bit", TypeError),
        (torch.zeros(5, dtype=torch.int8), "base4", ValueError),
        ([0, 1, -1], "base3", TypeError),
    ],
)
def test_pack_rejects(bad, packing, err):
    with pytest.raises(err):
        pack_trits(bad, packing)
