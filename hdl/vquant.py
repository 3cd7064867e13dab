"""The decoder's vector quantizer (docs/SPEC.md section 9, "Quantize"), bit for bit with
``ptqtp.golden_decoder.quantize_vector``: a row of integers in, its ``bits``-bit values and
their S scale (16-bit mantissa, exponent) out.

    LOAD   rows elements into a buffer, tracking the largest and smallest value
    NORM   sh = bitlen(max|v|) - 24; an = max(|rnd(vmax / 2^sh)|, |rnd(vmin / 2^sh)|)
    DIV    R = floor(Q 2^40 / an), then t = floor(an 2^20 / Q) (one shared restoring divider,
           a quotient bit a cycle)
    SCALE  m = t rounded to 16 bits (a carry renormalized), e = sh - 20 - frac + shift
    OUT    q = clip(rnd(rnd(v / 2^sh) R / 2^40), -Q, Q), one element every nine cycles

Every rounding shift is two registered stages (add the half, then shift), so no path holds a
carry chain and a barrel shifter together.

|rnd(v / 2^sh)| grows with |v| on each side of zero, so the row's extremes give an without a
second pass. A zero row gives q = 0 and the scale (0, 0).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["VectorQuantizer", "SeqDivider"]

NORM_BITS = 24  # rows are normalized to 24-bit magnitudes
R_SHIFT = 40  # R = floor(Q 2^40 / an)
T_SHIFT = 20  # t = floor(an 2^20 / Q)
MANT = 16


class SeqDivider(wiring.Component):
    """Unsigned restoring division, one quotient bit a cycle: ``start`` with ``num`` and ``den``
    (den > 0) gives ``quo`` = floor(num / den) when ``done`` pulses, ``num_width + 1`` cycles later."""

    def __init__(self, num_width: int, den_width: int):
        self.num_width, self.den_width = num_width, den_width
        super().__init__(
            {
                "start": In(1),
                "num": In(num_width),
                "den": In(den_width),
                "quo": Out(num_width),
                "done": Out(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        rem = Signal(self.den_width + 1)
        num = Signal(self.num_width)
        den = Signal(self.den_width)
        count = Signal(range(self.num_width + 1))
        busy = Signal()
        # the request is registered first: the caller's state decoding stays off the divide step
        start, num_in, den_in = Signal(), Signal(self.num_width), Signal(self.den_width)
        m.d.sync += [start.eq(self.start), num_in.eq(self.num), den_in.eq(self.den)]
        m.d.sync += self.done.eq(0)
        with m.If(start):
            m.d.sync += [num.eq(num_in), den.eq(den_in), rem.eq(0), count.eq(self.num_width), busy.eq(1)]
            m.d.sync += self.quo.eq(0)
        with m.Elif(busy):
            shifted = Signal(self.den_width + 2)
            m.d.comb += shifted.eq(Cat(num[-1], rem))
            take = shifted >= den
            m.d.sync += [
                rem.eq(Mux(take, shifted - den, shifted)),
                num.eq(num << 1),
                self.quo.eq(Cat(take, self.quo)),
                count.eq(count - 1),
            ]
            with m.If(count == 1):
                m.d.sync += [busy.eq(0), self.done.eq(1)]
        return m


def _bitlen(m: Module, v, width: int, name: str) -> Signal:
    """The bit length of an unsigned value: a tree of halves (depth log2 width, no long chains)."""
    out = Signal(range(width + 1), name=name)
    if width == 1:
        m.d.comb += out.eq(v[0])
        return out
    low_w = width // 2
    lo = _bitlen(m, v[:low_w], low_w, f"{name}_l")
    hi = _bitlen(m, v[low_w:width], width - low_w, f"{name}_h")
    m.d.comb += out.eq(Mux(v[low_w:width] != 0, low_w + hi, lo))
    return out


class VectorQuantizer(wiring.Component):
    """Quantize rows of up to ``depth`` signed ``width``-bit integers (value v 2^-frac) to
    ``bits`` bits. Input ``i``: (value, last); outputs: ``scale`` (m, e) once a row, before
    its values on ``o`` (q, last). Both outputs wait for ready."""

    def __init__(self, bits: int = 10, width: int = 48, frac: int = 14, depth: int = 2048):
        if not 2 <= bits <= 16:
            raise ValueError(f"bits must be in 2..16, not {bits}")
        self.bits, self.width, self.frac, self.depth = bits, width, frac, depth
        self.Q = 2 ** (bits - 1) - 1
        super().__init__(
            {
                "i": In(stream.Signature(data.StructLayout({"value": signed(width), "last": 1}))),
                "o": Out(stream.Signature(data.StructLayout({"q": signed(bits), "last": 1}))),
                "scale": Out(stream.Signature(data.StructLayout({"m": unsigned(MANT), "e": signed(12)}))),
            }
        )

    def elaborate(self, platform):
        m = Module()
        W, Q = self.width, self.Q
        m.submodules.mem = mem = Memory(shape=signed(W), depth=self.depth, init=[])
        wr, rd = mem.write_port(), mem.read_port()
        num_w = max(R_SHIFT + Q.bit_length(), NORM_BITS + 1 + T_SHIFT) + 1
        m.submodules.div = div = SeqDivider(num_w, NORM_BITS + 2)

        addr = Signal(range(self.depth))
        count = Signal(range(self.depth + 1))
        vmax, vmin = Signal(signed(W)), Signal(signed(W))
        sh = Signal(signed(8))
        an = Signal(NORM_BITS + 2)
        R = Signal(num_w)
        t = Signal(num_w)
        zero = Signal()
        last_out = Signal()

        value = self.i.payload.value
        m.d.comb += [wr.addr.eq(addr), wr.data.eq(value), rd.addr.eq(addr)]

        # Each state registers its result: one long path per cycle (docs/DECODER.md, timing).
        amax = Signal(W)
        sh_now = Signal(signed(8))
        amax_len = _bitlen(m, amax, W, "amax_len")
        hi, lo = Signal(signed(W + 2)), Signal(signed(W + 2))
        hi_a, lo_a = Signal(signed(W + 1)), Signal(signed(W + 1))
        right, left, half = Signal(6), Signal(5), Signal(W)  # rnd(v / 2^sh): (v + half) >> right, or v << left
        v_r, v_a = Signal(signed(W)), Signal(signed(W + 1))

        # OUT: the buffered element, normalized, times R, rounded and clipped (a stage each)
        vn = Signal(signed(NORM_BITS + 2))
        r_w = Q.bit_length() + R_SHIFT - NORM_BITS + 2  # R <= Q 2^40 / 2^23
        prod = Signal(signed(NORM_BITS + 2 + r_w + 1))
        q_out = Signal(signed(self.bits))
        VL, RL = 13, r_w // 2  # vn = vh 2^VL + vl, R = Rh 2^RL + Rl (vl, Rl unsigned)
        pp = [Signal(signed(32), name=f"pp{k}") for k in range(4)]
        s_hi, s_lo = Signal(signed(48)), Signal(signed(48))
        rounded = (prod + (1 << (R_SHIFT - 1))) >> R_SHIFT

        # SCALE: t to a 16-bit mantissa
        s2 = Signal(signed(8))
        t_len = _bitlen(m, t, num_w, "t_len")
        mt = Signal(MANT + 1)
        t_a = Signal(num_w + 1)
        carry = mt[MANT]

        with m.FSM():
            with m.State("LOAD"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.comb += wr.en.eq(1)
                    with m.If((count == 0) | (value > vmax)):
                        m.d.sync += vmax.eq(value)
                    with m.If((count == 0) | (value < vmin)):
                        m.d.sync += vmin.eq(value)
                    m.d.sync += [addr.eq(addr + 1), count.eq(count + 1)]
                    with m.If(self.i.payload.last):
                        m.next = "AMAX"
            with m.State("AMAX"):
                m.d.sync += amax.eq(Mux(vmax >= -vmin, vmax, -vmin).as_unsigned())
                m.next = "SHIFT"
            with m.State("SHIFT"):
                m.d.sync += [sh_now.eq(Mux(amax == 0, 0, amax_len - NORM_BITS)), zero.eq(amax == 0)]
                m.next = "CONTROLS"
            with m.State("CONTROLS"):
                m.d.sync += [
                    sh.eq(sh_now),
                    right.eq(Mux(sh_now > 0, sh_now, 0)[:6]),
                    left.eq(Mux(sh_now < 0, -sh_now, 0)[:5]),
                    half.eq(Mux(sh_now > 0, Const(1, W) << (sh_now - 1)[:6], 0)),
                ]
                m.next = "EXT_ADD"
            with m.State("EXT_ADD"):
                m.d.sync += [hi_a.eq(vmax + half), lo_a.eq(vmin + half)]
                m.next = "EXT_SHIFT"
            with m.State("EXT_SHIFT"):
                m.d.sync += [
                    hi.eq(Mux(right != 0, hi_a >> right, vmax << left)),
                    lo.eq(Mux(right != 0, lo_a >> right, vmin << left)),
                ]
                m.next = "NORM"
            with m.State("NORM"):
                m.d.sync += an.eq(Mux(hi >= -lo, hi, -lo))
                m.next = "DIV_R"
            with m.State("DIV_R"):
                m.d.comb += [div.start.eq(1), div.num.eq(Const(Q << R_SHIFT, num_w)), div.den.eq(Mux(zero, 1, an))]
                m.next = "WAIT_R"
            with m.State("WAIT_R"):
                with m.If(div.done):
                    m.d.sync += R.eq(Mux(zero, 0, div.quo))
                    m.next = "DIV_T"
            with m.State("DIV_T"):
                m.d.comb += [div.start.eq(1), div.num.eq(an << T_SHIFT), div.den.eq(Q)]
                m.next = "WAIT_T"
            with m.State("WAIT_T"):
                with m.If(div.done):
                    m.d.sync += t.eq(div.quo)
                    m.next = "T_LEN"
            with m.State("T_LEN"):
                m.d.sync += s2.eq(t_len - MANT)
                m.next = "T_ADD"
            with m.State("T_ADD"):  # t > 2^16 unless the row is zero (then t = 0 and mt = 0)
                m.d.sync += t_a.eq(t + Mux(s2 > 0, Const(1, num_w) << (s2 - 1)[:6], 0))
                m.next = "MANTISSA"
            with m.State("MANTISSA"):
                m.d.sync += mt.eq(t_a >> Mux(s2 > 0, s2, 0)[:6])
                m.next = "SCALE"
            with m.State("SCALE"):
                m.d.comb += [
                    self.scale.valid.eq(1),
                    self.scale.payload.m.eq(Mux(zero, 0, Mux(carry, mt >> 1, mt))),
                    self.scale.payload.e.eq(Mux(zero, 0, sh - T_SHIFT - self.frac + s2 + carry)),
                ]
                with m.If(self.scale.ready):
                    m.d.sync += addr.eq(0)
                    m.next = "READ"
            with m.State("READ"):  # the sync read port's data is there a cycle later
                m.d.sync += last_out.eq(addr == count - 1)
                m.next = "FETCH"
            with m.State("FETCH"):
                m.d.sync += v_r.eq(rd.data)
                m.next = "ADD_HALF"
            with m.State("ADD_HALF"):
                m.d.sync += v_a.eq(v_r + half)
                m.next = "NORMALIZE"
            with m.State("NORMALIZE"):
                m.d.sync += vn.eq(Mux(right != 0, v_a >> right, v_r << left))
                m.next = "MULTIPLY"
            with m.State("MULTIPLY"):  # four DSP-sized partial products, registered
                m.d.sync += [
                    pp[0].eq(vn[VL:].as_signed() * R[RL:r_w]),
                    pp[1].eq(vn[VL:].as_signed() * R[:RL]),
                    pp[2].eq(vn[:VL] * R[RL:r_w]),
                    pp[3].eq(vn[:VL] * R[:RL]),
                ]
                m.next = "SUM"
            with m.State("SUM"):
                m.d.sync += [s_hi.eq((pp[0] << RL) + pp[1]), s_lo.eq((pp[2] << RL) + pp[3])]
                m.next = "PRODUCT"
            with m.State("PRODUCT"):
                m.d.sync += prod.eq((s_hi << VL) + s_lo)
                m.next = "ROUND"
            with m.State("ROUND"):
                m.d.sync += q_out.eq(Mux(rounded > Q, Q, Mux(rounded < -Q, -Q, rounded)))
                m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.q.eq(q_out), self.o.payload.last.eq(last_out)]
                with m.If(self.o.ready):
                    with m.If(last_out):
                        m.d.sync += [addr.eq(0), count.eq(0)]
                        m.next = "LOAD"
                    with m.Else():
                        m.d.sync += addr.eq(addr + 1)
                        m.next = "READ"
        return m
