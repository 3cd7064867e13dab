import pytest
import torch

from ptqtp.formats.packing import pack_trits, unpack_trits


def test_layout_matches_spec_by_hand():
    # trits j = 0..3 in one byte, least significant first: +1, -1, 0, +1 -> 01 11 00 01
    t = torch.tensor([1, -1, 0, 1], dtype=torch.int8)
    assert pack_trits(t).tolist() == [0b01_00_11_01]


@pytest.mark.parametrize("shape", [(4,), (3, 8), (2, 5, 128)])
def test_round_trip_and_inputs_untouched(shape):
    t = torch.randint(-1, 2, shape, dtype=torch.int8, generator=torch.Generator().manual_seed(0))
    before = t.clone()
    packed = pack_trits(t)
    assert packed.dtype == torch.uint8 and packed.shape == (*shape[:-1], shape[-1] // 4)
    p_before = packed.clone()
    assert torch.equal(unpack_trits(packed), t)
    assert torch.equal(t, before) and torch.equal(packed, p_before)


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


@pytest.mark.parametrize("bad,err", [(torch.tensor([2, 0, 0, 0], dtype=torch.int8), ValueError),
                                     (torch.zeros(6, dtype=torch.int8), ValueError),
                                     (torch.zeros(4, dtype=torch.int32), TypeError)])
def test_pack_rejects(bad, err):
    with pytest.raises(err):
        pack_trits(bad)
