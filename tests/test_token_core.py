"""The token core: whole tokens on the RTL, bit for bit with the golden decoder (next id and
integer logit, and the KV cache it leaves in memory), its program and memory layout, its
errors, and the cycle model the plan uses."""

import numpy as np
import pytest
from test_golden_decoder import small_artifact

from ptqtp.formats.decoder_weights import decoder_weights
from ptqtp.golden_decoder import DecoderArch, GoldenDecoder, IntRows
from ptqtp.hdl.engine_model import EngineParams
from ptqtp.hdl.token_core import TokenParams
from ptqtp.hdl.token_isa import WORDS, Instr, Op, Unit
from ptqtp.hdl.token_program import compile_token, kv_records, program_length, table_bytes, token_cycles

CAP = 16


def engine(**kw) -> EngineParams:
    base = dict(act_bits=10, data_width=128, max_d=256, group_size=32, burst=16, vectors=1, lanes=16, rows=4)
    return EngineParams(**(base | kw))


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    w = decoder_weights(small_artifact(tmp_path_factory.mktemp("llama"), "llama"))
    p = TokenParams(w.arch, engine(), capacity=CAP, scratch_words=2048, program_instrs=256)
    return w, p, compile_token(w, p)


def golden_steps(w, tokens):
    g = GoldenDecoder(w, capacity=CAP)
    out = []
    for t in tokens:
        li, _ = g.step([t])
        out.append((int(np.argmax(li[-1])), int(li[-1].max())))
    return g, out


def kv_in_memory(image, memory: bytes, cache, length: int) -> None:
    for at, want in image.kv_writes(cache, length):
        assert bytes(memory[at : at + len(want)]) == want, f"KV records at {at:#x} differ from the golden cache"


# -- instructions, tables, program ------------------------------------------------------------


def test_instruction_fields_sit_where_the_spec_says():
    ins = Instr(
        Op.VOP,
        unit=Unit.ROPE,
        sreg=3,
        sreg_out=5,
        flag=1,
        outer=7,
        inner=300,
        a=(10, 64),
        b=(42, 0),
        c=(9, 1),
        d=(8, 2),
        addr=0x12345678,
        imm=-3,
    )
    w = ins.words()
    assert len(w) == WORDS
    assert w[0] == Op.VOP | Unit.ROPE << 4 | 3 << 8 | 5 << 11 | 1 << 14
    assert w[1] == 7 | 300 << 16 and w[2] == 10 | 64 << 16 and w[3] == 42 and w[5] == 8 | 2 << 16
    assert w[6] == 0x12345678 and w[7] == (-3) & 0xFFFFFFFF


@pytest.mark.parametrize("field,value", [("inner", 2**16), ("sreg", 8), ("unit", 16), ("addr", 2**32)])
def test_instruction_fields_out_of_range_are_refused(field, value):
    with pytest.raises(ValueError, match=field if field != "addr" else "addr"):
        Instr(Op.VOP, note="x", **{field: value}).words()


def test_table_layout_round_trip():
    rng = np.random.default_rng(0)
    rows = IntRows.quantize(rng.normal(size=(13, 40)))
    data = np.frombuffer(table_bytes(rows), np.uint8)
    rb = 3  # ceil(40 / 16) words a row
    block = 16 + 8 * rb * 16
    assert len(data) == 2 * block
    for r in range(13):
        b, s = divmod(r, 8)
        scale = int(data[b * block + 2 * s : b * block + 2 * s + 2].view("<i2")[0])
        row = data[b * block + 16 + s * rb * 16 :][: rb * 16].view(np.int8)
        assert scale == rows.a_q[r, 0]
        assert np.array_equal(row[:40], rows.q[r]) and not row[40:].any()
    assert not data[block + 16 + 5 * rb * 16 :].any()  # padding rows are zero


def test_kv_records_carry_the_running_largest_exponent():
    vals = np.arange(6 * 16, dtype=np.int64).reshape(6, 16) - 40
    m, e = np.arange(6) + 40000, np.array([-3, -7, 2, -1, 5, 0])
    rec = np.frombuffer(kv_records(vals, m, e, running=True), np.uint8).reshape(6, 32)
    head = rec[:, :16].copy().view("<i2")
    assert list(head[:, 0].view("<u2")) == list(m) and list(head[:, 1]) == list(e)
    assert list(head[:, 2]) == [-3, -3, 2, 2, 5, 5]
    assert np.array_equal(rec[:, 16:].view(np.int8), vals)
    k = np.frombuffer(kv_records(vals, m, e, running=False), np.uint8).reshape(6, 32)[:, :16].copy().view("<i2")
    assert list(k[:, 2]) == list(e)


def test_program_follows_the_block_order(llama):
    w, p, image = llama
    ops = [ins.op for ins in image.program]
    assert len(ops) == program_length(w.arch)
    assert ops[0] == Op.EMBED and ops[-2:] == [Op.LMHEAD, Op.END]
    assert ops.count(Op.LINEAR) == 7 * w.arch.layers
    assert ops.count(Op.ATTN) == w.arch.heads * w.arch.layers
    assert ops.count(Op.KVSTORE) == 2 * w.arch.kv_heads * w.arch.layers


def test_dry_program_is_the_program(llama):
    """The planner's program (shapes only) is instruction for instruction the core's."""
    w, p, image = llama
    dry = compile_token(w, p, dry=True)
    assert [i.words() for i in dry.program] == [i.words() for i in image.program]
    assert not dry.memory and dry.kv == image.kv


def test_unsupported_models_are_refused_by_name(tmp_path):
    a = DecoderArch(64, 1, 4, 2, 16, 128, 256, 1e4, 1e-5, qk_norm=True, name="qwen3")
    with pytest.raises(ValueError, match="qwen3"):
        TokenParams(a, engine())
    with pytest.raises(ValueError, match="head_dim 24"):
        TokenParams(DecoderArch(96, 1, 4, 2, 24, 128, 256, 1e4, 1e-5), engine())
    with pytest.raises(ValueError, match="A = 8"):
        TokenParams(DecoderArch(64, 1, 4, 2, 16, 128, 256, 1e4, 1e-5), engine(act_bits=8))
    w = decoder_weights(small_artifact(tmp_path, "qwen2"))
    p = TokenParams(w.arch, engine(), capacity=CAP, scratch_words=2048, program_instrs=256)
    with pytest.raises(ValueError, match="block 0: biases"):
        compile_token(w, p)


def test_small_memories_are_refused(llama):
    w, p, _ = llama
    from dataclasses import replace

    with pytest.raises(ValueError, match="scratch words"):
        compile_token(w, replace(p, scratch_words=100))
    with pytest.raises(ValueError, match="instructions"):
        compile_token(w, replace(p, program_instrs=10))


def test_token_cycles_grow_with_the_context(llama):
    w, p, image = llama
    c1, c9 = (token_cycles(image.program, p, c) for c in (1, 9))
    per_key = (c9["attn"] - c1["attn"]) / 8
    assert per_key == w.arch.heads * w.arch.layers * (2 * w.arch.head_dim // 16 + 25)
    assert c9["total"] - c1["total"] == pytest.approx(c9["attn"] - c1["attn"] + c9["kv"] - c1["kv"])
    slow = token_cycles(image.program, p, 1, bytes_per_cycle=4)
    assert slow["lmhead"] > c1["lmhead"] * 3


# -- the RTL ------------------------------------------------------------------------------------


@pytest.mark.rtl
def test_tokens_in_amaranth_sim_are_golden_with_memory_stalls(llama):
    from ptqtp.sim.token_pysim import run_tokens_pysim

    w, p, image = llama
    tokens = [5]  # one token (about 40 s); the Verilator tests below run ten
    g, want = golden_steps(w, tokens)
    got, memory = run_tokens_pysim(p, image, tokens, stall=0.25, seed=3)
    assert [(r.next_id, r.logit) for r in got] == want
    kv_in_memory(image, memory, g.cache, len(tokens))


@pytest.fixture(scope="module")
def compiled(llama):
    from ptqtp.sim.token_compiled import CompiledTokenCore

    w, p, image = llama
    return CompiledTokenCore(p, image, stall=0.3, seed=7)


@pytest.mark.rtl
def test_tokens_in_verilator_are_golden_and_the_model_counts_their_cycles(llama, compiled):
    w, p, image = llama
    rng = np.random.default_rng(1)
    tokens = [int(t) for t in rng.integers(0, w.arch.vocab, 10)]
    g, want = golden_steps(w, tokens)
    compiled.reset_context()
    got = [compiled.step(t) for t in tokens]
    assert [(r.next_id, r.logit) for r in got] == want
    kv_in_memory(image, compiled.memory(0, len(image.memory)), g.cache, len(tokens))
    for r in got:  # the opcode counters cover all but fetch and dispatch
        assert 0 < r.cycles - sum(r.op_cycles.values()) <= 11 * len(image.program)


@pytest.mark.rtl
def test_continuing_a_golden_context(llama, compiled):
    """KV records written from the golden cache are what the core reads: the token after a
    golden prefill is the golden decoder's."""
    w, p, image = llama
    ids = [3, 1, 4, 1, 5, 9, 2, 6]
    g = GoldenDecoder(w, capacity=CAP)
    g.step(ids[:-1])
    li, _ = g.step(ids[-1:])
    compiled.reset_context()
    compiled.continue_from(g.cache, len(ids) - 1)
    r = compiled.step(ids[-1])
    assert (r.next_id, r.logit) == (int(np.argmax(li[-1])), int(li[-1].max()))


@pytest.mark.rtl
def test_bad_token_and_full_context_stop_the_core_with_their_error(llama, compiled):
    from ptqtp.hdl.token_isa import TokenReg

    w, p, image = llama
    compiled.reset_context()
    with pytest.raises(RuntimeError, match="TOKEN_RANGE"):
        compiled.step(w.arch.vocab)
    compiled.write(TokenReg.POS, CAP)
    with pytest.raises(RuntimeError, match="CONTEXT_FULL"):
        compiled.step(1)
    compiled.reset_context()  # and it runs again afterwards
    assert compiled.step(5).next_id == golden_steps(w, [5])[1][0][0]


@pytest.mark.rtl
def test_rtl_decoder_refuses_bad_input_before_the_core(llama):
    from ptqtp.workflows.token import RtlDecoder

    w, p, image = llama
    dec = RtlDecoder(w, p)
    with pytest.raises(ValueError, match="out of range"):
        dec.step([w.arch.vocab + 3])
    dec.length = CAP
    with pytest.raises(ValueError, match="capacity of 16 tokens"):
        dec.step([1])
