"""The host-to-RTL contract (ptqtp.hdl.contract) is the spec's register table, and its bit
fields pack what the spec says."""

from pathlib import Path

import pytest

from ptqtp.hdl.contract import ERRORS, LAYOUT, PARAMS, REGISTERS, STATUS, BitFields, Field, Reg, register_table
from ptqtp.hdl.engine_model import EngineParams

SPEC = Path(__file__).resolve().parents[1] / "docs" / "SPEC.md"


def test_spec_register_table_is_the_contract():
    text = SPEC.read_text()
    assert register_table() in text, "docs/SPEC.md 6.2 differs from ptqtp.hdl.contract.register_table()"
    rows = [line for line in text.split("### 6.2", 1)[1].split("###", 1)[0].splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[:3] for r in rows[1:]] == [[f"| {int(r)}", r.name, REGISTERS[r][0]] for r in Reg]


def test_every_register_is_described_and_addresses_are_dense():
    assert set(REGISTERS) == set(Reg) and sorted(int(r) for r in Reg) == list(range(len(Reg)))


def test_words_as_the_spec_derives_them():
    """LAYOUT: planes | offset << 2 | base-3 << 3 | max_planes << 4 | S << 8 | G << 16;
    PARAMS: P | R << 8 | M << 16 | DW/8 << 24."""
    assert (
        EngineParams(planes=2, offset=True, packing="base3").layout_word()
        == 2 | 1 << 2 | 1 << 3 | 4 << 4 | 16 << 8 | 128 << 16
    )
    assert (
        EngineParams(planes=1, max_planes=1, scale_bits=12, group_size=64).layout_word()
        == 1 | 1 << 4 | 12 << 8 | 64 << 16
    )
    assert (
        EngineParams(lanes=64, rows=4, vectors=8, data_width=128, burst=16).params_word()
        == 64 | 4 << 8 | 8 << 16 | 16 << 24
    )
    assert STATUS.unpack(1 | 4 | 7 << 8) == {"busy": 1, "queue_full": 0, "error": 1, "runs": 7}
    assert ERRORS.pack(refused=1, memory=1) == 0b1001


def test_fields_round_trip_and_reject():
    for fields in (PARAMS, LAYOUT, STATUS, ERRORS):
        values = {f.name: (1 << f.width) - 1 for f in fields}
        assert fields.unpack(fields.pack(**values)) == values
    with pytest.raises(ValueError, match="does not fit 8 bits"):
        PARAMS.pack(lanes=256)
    with pytest.raises(ValueError, match="overlaps"):
        BitFields(Field("a", 0, 4, "a"), Field("b", 3, 2, "b"))
