"""The int8 lm_head with argmax (docs/SPEC.md section 11, *LMHEAD*), bit for bit with
``ptqtp.golden_decoder.IntRows.logits`` (one scale per row) and ``np.argmax``:

    logit[r] = a_q[r] * sum_j q[r, j] x_q[j],   next = the lowest r of the largest logit

The table streams in blocks of eight rows: a scale beat (eight 16-bit a_q) and then each row's
``row_beats`` words of ``lanes`` int8 values (zero past the last column). x_q sits in a small
memory of ``lanes``-wide words. One word a cycle: products, an adder tree, the row's sum,
its scale and the comparison are a stage each; padding rows past ``rows`` are never compared.
"""

from __future__ import annotations

from amaranth.hdl import Array, Module, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["LMHeadUnit", "ROWS_PER_BLOCK"]

ROWS_PER_BLOCK = 8


class LMHeadUnit(wiring.Component):
    """Ports: ``x_we``/``x_addr``/``x_data`` write x_q words (lane i at bits i*A); ``start``
    with ``rows`` and ``row_beats`` begins a pass over ``table`` (DW-bit words); ``done``
    pulses with ``best`` (row) and ``logit`` valid."""

    def __init__(self, lanes: int = 16, act_bits: int = 10, max_row_beats: int = 128, id_bits: int = 20):
        self.lanes, self.A, self.max_row_beats, self.id_bits = lanes, act_bits, max_row_beats, id_bits
        super().__init__(
            {
                "x_we": In(1),
                "x_addr": In(range(max_row_beats)),
                "x_data": In(lanes * act_bits),
                "start": In(1),
                "rows": In(id_bits),
                "row_beats": In(range(max_row_beats + 1)),
                "table": In(stream.Signature(lanes * 8)),
                "busy": Out(1),
                "done": Out(1),
                "best": Out(id_bits),
                "logit": Out(signed(64)),
            }
        )

    def elaborate(self, platform):
        m = Module()
        L, A = self.lanes, self.A
        m.submodules.x = xmem = Memory(shape=L * A, depth=self.max_row_beats, init=[])
        xw, xr = xmem.write_port(), xmem.read_port(domain="comb")
        m.d.comb += [xw.en.eq(self.x_we), xw.addr.eq(self.x_addr), xw.data.eq(self.x_data)]

        rows, row_beats = Signal.like(self.rows), Signal.like(self.row_beats)
        beat = Signal(range(self.max_row_beats + 1))  # word within the row (scale beat: in_scale)
        in_scale = Signal()  # the next word is a block's scale beat
        sub = Signal(range(ROWS_PER_BLOCK))  # row within the block
        row = Signal(self.id_bits)
        scales = Array(Signal(16, name=f"a{i}") for i in range(ROWS_PER_BLOCK))
        fed = Signal(self.id_bits + 1)  # rows whose words have all been taken
        m.d.comb += [xr.addr.eq(beat), self.table.ready.eq(self.busy & (fed < self.rows_padded(rows)))]

        # stage 1: products; stage 2: their sum; stage 3: the row's sum; stage 4: scaled; 5: compare
        prod = [Signal(signed(8 + A), name=f"p{i}") for i in range(L)]
        s1_valid, s1_end, s1_row, s1_scale = Signal(), Signal(), Signal(self.id_bits), Signal(16)
        tree = Signal(signed(8 + A + L.bit_length()))
        s2_valid, s2_end, s2_row, s2_scale = Signal(), Signal(), Signal(self.id_bits), Signal(16)
        acc = Signal(signed(8 + A + L.bit_length() + self.max_row_beats.bit_length()))
        s3_valid, s3_row, s3_scale = Signal(), Signal(self.id_bits), Signal(16)
        logit = Signal(signed(len(acc) + 17))
        s4_valid, s4_row = Signal(), Signal(self.id_bits)
        have_best = Signal()

        take = self.table.valid & self.table.ready
        word = self.table.payload
        m.d.sync += [s1_valid.eq(0), self.done.eq(0)]
        with m.If(self.start & ~self.busy):
            m.d.sync += [
                rows.eq(self.rows),
                row_beats.eq(self.row_beats),
                beat.eq(0),
                in_scale.eq(1),
                sub.eq(0),
                row.eq(0),
                fed.eq(0),
                have_best.eq(0),
                self.busy.eq(1),
            ]
        with m.Elif(take & in_scale):
            for i in range(ROWS_PER_BLOCK):
                m.d.sync += scales[i].eq(word[16 * i : 16 * i + 16])
            m.d.sync += in_scale.eq(0)
        with m.Elif(take):
            xw_ = xr.data
            for i in range(L):
                m.d.sync += prod[i].eq(word[8 * i : 8 * i + 8].as_signed() * xw_[A * i : A * i + A].as_signed())
            end = beat == row_beats - 1
            m.d.sync += [s1_valid.eq(1), s1_end.eq(end), s1_row.eq(row), s1_scale.eq(scales[sub])]
            with m.If(end):
                m.d.sync += [beat.eq(0), row.eq(row + 1), sub.eq(sub + 1), fed.eq(fed + 1)]
                with m.If(sub == ROWS_PER_BLOCK - 1):
                    m.d.sync += in_scale.eq(1)
            with m.Else():
                m.d.sync += beat.eq(beat + 1)

        m.d.sync += [
            s2_valid.eq(s1_valid),
            s2_end.eq(s1_end),
            s2_row.eq(s1_row),
            s2_scale.eq(s1_scale),
            tree.eq(sum(prod)),
        ]
        m.d.sync += s3_valid.eq(0)
        with m.If(s2_valid):
            with m.If(s2_end):
                m.d.sync += [acc.eq(0), s3_valid.eq(1), s3_row.eq(s2_row), s3_scale.eq(s2_scale)]
            with m.Else():
                m.d.sync += acc.eq(acc + tree)
        # the row's complete sum is acc + tree in the cycle its last word's sum arrives
        row_sum = Signal.like(acc)
        with m.If(s2_valid & s2_end):
            m.d.sync += row_sum.eq(acc + tree)
        m.d.sync += [s4_valid.eq(s3_valid & (s3_row < rows)), s4_row.eq(s3_row)]
        with m.If(s3_valid):
            m.d.sync += logit.eq(row_sum * s3_scale.as_signed())
        with m.If(s4_valid & (~have_best | (logit > self.logit))):
            m.d.sync += [self.best.eq(s4_row), self.logit.eq(logit), have_best.eq(1)]
        # the last row leaves stage 4 a cycle after stage 3: done when every row is through
        last_row = Signal()
        m.d.sync += last_row.eq(s3_valid & (s3_row == self.rows_padded(rows) - 1))
        with m.If(last_row):
            m.d.sync += [self.done.eq(1), self.busy.eq(0)]
        return m

    @staticmethod
    def rows_padded(rows):
        """Rows the table holds: whole blocks of eight."""
        return ((rows + ROWS_PER_BLOCK - 1) >> 3) << 3
