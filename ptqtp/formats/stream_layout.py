"""The weight stream of the streaming engine: how one layer lies in memory (docs/SPEC.md section 6).

The layout belongs to an engine configuration: P lanes, R row units (a power of two),
``planes`` trit planes and ``offset`` support, S-bit scales, a DW-bit memory bus, group
size G, and the weight ``packing``. A layer is one contiguous region of DW-bit words, read
front to back by the engine's DMA and consumed in this order. Its *steps* are the
(block, group) pairs: for each block b of R rows (rows b*R .. b*R + R-1; rows past n are
zero), for each group g (G input columns). Each step has a scale record and G/P weight
records.

- Weight record of (b, chunk): W = planes * R * 2P bits; plane k's unit at bit k * R * 2P,
  inside it bit ``r * 2P + 2i`` is the low bit of the 2-bit trit code (00 = 0, 01 = +1,
  11 = -1) of row unit r, lane i (column chunk * P + i). Its trits, in that order (trit
  k * R * P + r * P + i), are the record's *trit sequence*.
- Scale record of (b, g): terms = planes + offset slots of R fields, S-bit two's
  complement, field (k, r) at bit ``(k * R + r) * S``; slots a_q plane 1, [a_q plane 2],
  [m_q]; padded with 0 to ``s_beats = ceil(terms * R * S / DW)`` words.

``packing="2bit"``: for each step, its scale record, then its weight section: the step's
G/P weight records back to back (record j at bit j * W; W >= DW gives W / DW words a
record, W < DW gives DW / W records a word), padded with 0 to ``wg_beats`` whole words.

``packing="base3"``: steps go in *frames* of FRAME = 5 (the last frame of a layer may hold
fewer, k). A frame is its scale section, the k scale records back to back (record i at
bit i * terms * R * S), padded with 0 to whole words; then its trit section, the trit
sequences of its k * G/P weight records concatenated and packed five trits a byte
(``ptqtp.formats.packing``, base-3, remainder trits 0), padded with 0 to whole words. Five
steps hold 5 * planes * R * G trits = planes * R * G bytes, so a full frame's trit section
has no padding.

- A layer with fewer planes than the engine (PT^2-LLM on a two-plane engine) stores zero
  trits and zero scales in the missing plane; a layer without offsets stores m_q = 0.
- A layer with more planes K than the engine runs in ``passes = ceil(K / planes)`` passes
  (issue 29): it is stored as the *wide layer* of ``passes * d_pad`` columns whose pass p
  columns p * d_pad .. (p + 1) * d_pad - 1 hold planes p * planes .. (p + 1) * planes - 1
  (zero planes past K) with their scales; m_q sits in pass 0 and is 0 in the others. The
  engine reads the activations of column j at j mod d_pad, so the wide layer's sum is the
  K-plane layer's exact accumulator.
- A word's bit j is bit j % 8 of byte j // 8 (little-endian, as AXI puts bytes on the bus).

:class:`StreamLayout` is the one definition; the engine's record unpacker and base-3
decoder (``ptqtp.hdl.engine``, ``ptqtp.hdl.base3``) read these positions, and
``encode``/``decode`` write and read them from golden-model arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .packing import check_packing, pack_trits, packed_width, unpack_trits

__all__ = ["StreamLayout", "FRAME", "MAX_PLANES", "pack_activations", "gather_results"]

#: steps per base-3 frame: 5 steps of planes * R * G trits fill planes * R * G bytes exactly
FRAME = 5
#: most planes a layer has (``ptqtp.methods.kplanes.MAX_PLANES``)
MAX_PLANES = 4


@dataclass(frozen=True)
class StreamLayout:
    """Record sizes and bit positions for an engine (see the module doc)."""

    lanes: int
    rows: int
    planes: int = 2
    offset: bool = False
    group_size: int = 128
    scale_bits: int = 16
    data_width: int = 128
    packing: str = "2bit"

    def __post_init__(self):
        check_packing(self.packing)
        for name in ("lanes", "rows", "group_size", "scale_bits", "data_width"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
        for name in ("lanes", "rows", "data_width"):
            v = getattr(self, name)
            if v & (v - 1):
                raise ValueError(f"{name} must be a power of two, not {v!r}")
        if self.planes not in (1, 2) or not isinstance(self.offset, bool):
            raise ValueError(f"planes must be 1 or 2 and offset a bool, not {self.planes!r}, {self.offset!r}")
        if self.group_size % self.lanes or self.lanes < 2:
            raise ValueError(f"lanes P={self.lanes} must be >= 2 and divide G={self.group_size}")
        if self.data_width < 8 or self.record_bits < 8:
            raise ValueError(
                f"data_width and the weight record (planes * R * 2P = {self.record_bits} bits) must be at least 8 bits"
            )

    @property
    def terms(self) -> int:
        return self.planes + self.offset

    @property
    def word_bytes(self) -> int:
        return self.data_width // 8

    @property
    def chunks_per_group(self) -> int:
        return self.group_size // self.lanes

    @property
    def unit_bits(self) -> int:
        """One plane of one record: R rows x P trits x 2 bits."""
        return self.rows * 2 * self.lanes

    @property
    def record_bits(self) -> int:
        """W, one weight record (every plane of R rows over one chunk)."""
        return self.planes * self.unit_bits

    @property
    def record_beats(self) -> int:
        """Words per weight record (W >= DW), else 1."""
        return max(1, self.record_bits // self.data_width)

    @property
    def records_per_beat(self) -> int:
        """Weight records per word (W < DW), else 1."""
        return max(1, self.data_width // self.record_bits)

    @property
    def scale_record_bits(self) -> int:
        return self.terms * self.rows * self.scale_bits

    @property
    def scale_beats(self) -> int:
        return -(-self.scale_record_bits // self.data_width)

    @property
    def group_weight_beats(self) -> int:
        """wg_beats: words of one group's weight section (2-bit packing)."""
        return -(-self.chunks_per_group * self.record_bits // self.data_width)

    @property
    def group_beats(self) -> int:
        """Words of one step (2-bit packing)."""
        return self.scale_beats + self.group_weight_beats

    @property
    def record_trits(self) -> int:
        return self.planes * self.rows * self.lanes

    @property
    def step_trits(self) -> int:
        """Trits of one step's weight records: planes * R * G."""
        return self.planes * self.rows * self.group_size

    def frame_trit_beats(self, k: int) -> int:
        """Base-3: words of the packed trits of a frame of ``k`` steps."""
        return -(-packed_width(k * self.step_trits, "base3") // self.word_bytes)

    def frame_scale_beats(self, k: int) -> int:
        """Base-3: words of the scale section of a frame of ``k`` steps."""
        return -(-k * self.scale_record_bits // self.data_width)

    def frame_beats(self, k: int) -> int:
        """Base-3: words of a frame of ``k`` steps."""
        return self.frame_scale_beats(k) + self.frame_trit_beats(k)

    def blocks(self, n: int) -> int:
        return -(-n // self.rows)

    def steps(self, n: int, d_pad: int) -> int:
        return self.blocks(n) * (d_pad // self.group_size)

    def layer_beats(self, n: int, d_pad: int, planes: int | None = None) -> int:
        """Words of one layer's region (a layer of ``planes`` planes, default the engine's;
        more planes take passes)."""
        d_pad *= self.passes(planes or self.planes)
        steps = self.steps(n, d_pad)
        if self.packing == "2bit":
            return steps * self.group_beats
        full, rest = divmod(steps, FRAME)
        return full * self.frame_beats(FRAME) + (self.frame_beats(rest) if rest else 0)

    def layer_bytes(self, n: int, d_pad: int, planes: int | None = None) -> int:
        return self.layer_beats(n, d_pad, planes) * self.word_bytes

    def passes(self, planes: int) -> int:
        """Passes of a layer with ``planes`` planes over the engine's: ceil(planes / self.planes)."""
        return -(-planes // self.planes)

    def check_layer(self, planes: int, offset: bool) -> None:
        """``ValueError`` unless a layer with ``planes`` planes (1..4, in passes; and offsets) is
        stored for this engine."""
        if not 1 <= planes <= MAX_PLANES:
            raise ValueError(f"a layer has 1 to {MAX_PLANES} planes, not {planes}")
        if offset and not self.offset:
            raise ValueError(
                f"a layer with {planes} plane(s) and offsets does not run on an engine with {self.planes} "
                "plane(s) and no offsets"
            )

    # ------------------------------------------------------------------ encode / decode

    def encode(self, trits: np.ndarray, a_q: np.ndarray, m_q: np.ndarray | None = None) -> bytes:
        """The region of a layer: trits int8 [planes, n, d_pad], a_q [planes, n, ng], m_q [n, ng]."""
        lp, n, d_pad = trits.shape
        R, P, G = self.rows, self.lanes, self.group_size
        if d_pad % G or a_q.shape != (lp, n, d_pad // G):
            raise ValueError(f"trits {trits.shape} and a_q {a_q.shape} do not match G={G}")
        self.check_layer(lp, m_q is not None)
        if lp > self.planes:
            trits, a_q, m_q = self._wide(trits, a_q, m_q)
            lp, d_pad = self.planes, trits.shape[2]
        blocks, ng, cpg = self.blocks(n), d_pad // G, self.chunks_per_group
        rows = np.zeros((self.planes, blocks * R, d_pad), np.int8)
        rows[:lp, :n] = trits
        # [planes, blocks, R, ng, cpg, P] -> [blocks, ng, cpg, planes, R, P]: each step's records' trit sequences
        t = rows.reshape(self.planes, blocks, R, ng, cpg, P).transpose(1, 3, 4, 0, 2, 5)
        steps = t.reshape(blocks * ng, self.step_trits)
        scales = np.zeros((self.terms, blocks * R, ng), np.int64)
        scales[:lp, :n] = a_q
        if m_q is not None:
            scales[self.planes, :n] = m_q
        scales = scales.reshape(self.terms, blocks, R, ng).transpose(1, 3, 0, 2)  # [blocks, ng, terms, R]
        fields = scales.reshape(blocks * ng, -1)  # a step's scale record: terms * R fields
        if self.packing == "2bit":
            records = self._pack_fields(fields, self.scale_bits, self.scale_beats * self.word_bytes)
            section = self._words(pack_trits(steps, "2bit"), self.group_weight_beats)
            return np.concatenate([records, section], axis=-1).tobytes()
        out = []
        for f0 in range(0, len(steps), FRAME):
            k = min(FRAME, len(steps) - f0)
            records = self._pack_fields(
                fields[f0 : f0 + k].reshape(-1), self.scale_bits, self.frame_scale_beats(k) * self.word_bytes
            )
            packed = pack_trits(steps[f0 : f0 + k].reshape(-1), "base3")
            out += [records, self._words(packed, self.frame_trit_beats(k))]
        return np.concatenate(out).tobytes()

    def _wide(self, trits, a_q, m_q):
        """A K-plane layer (K > planes) as its wide layer (module doc)."""
        K, n, d_pad = trits.shape
        passes, ng = self.passes(K), a_q.shape[2]
        t = np.zeros((passes * self.planes, n, d_pad), np.int8)
        a = np.zeros((passes * self.planes, n, ng), np.int64)
        t[:K], a[:K] = trits, a_q
        t = t.reshape(passes, self.planes, n, d_pad).transpose(1, 2, 0, 3).reshape(self.planes, n, passes * d_pad)
        a = a.reshape(passes, self.planes, n, ng).transpose(1, 2, 0, 3).reshape(self.planes, n, passes * ng)
        if m_q is not None:
            m_q = np.concatenate([m_q, np.zeros((n, (passes - 1) * ng), np.int64)], axis=1)
        return t, a, m_q

    def decode(self, data: bytes, n: int, d_pad: int, planes: int, offset: bool):
        """Inverse of :meth:`encode` for a layer with ``planes`` planes (and offsets):
        (trits [planes, n, d_pad], a_q [planes, n, ng], m_q [n, ng] or None). ``ValueError``
        on a wrong size, an invalid code or byte, or nonzero data where the layer has none."""
        R, P, G, wb = self.rows, self.lanes, self.group_size, self.word_bytes
        self.check_layer(planes, offset)
        if planes > self.planes:
            passes, ng = self.passes(planes), d_pad // G
            t, a, mq = self.decode(data, n, passes * d_pad, self.planes, offset)
            t = t.reshape(self.planes, n, passes, d_pad).transpose(2, 0, 1, 3).reshape(-1, n, d_pad)
            a = a.reshape(self.planes, n, passes, ng).transpose(2, 0, 1, 3).reshape(-1, n, ng)
            if np.any(t[planes:]) or np.any(a[planes:]) or (mq is not None and np.any(mq[:, ng:])):
                raise ValueError("nonzero padding, or data in a plane, row or offset the layer does not have")
            return np.ascontiguousarray(t[:planes]), a[:planes].copy(), None if mq is None else mq[:, :ng].copy()
        blocks, ng, cpg = self.blocks(n), d_pad // G, self.chunks_per_group
        expect = self.layer_bytes(n, d_pad)  # planes <= self.planes here: one pass
        if len(data) != expect:
            raise ValueError(f"region holds {len(data)} bytes, the layer needs {expect}")
        raw = np.frombuffer(data, np.uint8)
        sbytes, nsteps = self.scale_beats * wb, blocks * ng
        count = self.terms * R  # scale fields a step
        if self.packing == "2bit":
            raw = raw.reshape(nsteps, self.group_beats * wb)
            used = cpg * self.record_bits // 8
            fields = self._unpack_fields(raw[:, :sbytes], self.scale_bits, count)
            steps = unpack_trits(raw[:, sbytes : sbytes + used], "2bit")
            scale_pad = self._unpack_fields(raw[:, :sbytes], 1, sbytes * 8)[:, count * self.scale_bits :]
            unused = [raw[:, sbytes + used :], scale_pad]
        else:
            frame_fields: list[np.ndarray] = []
            step_list: list[np.ndarray] = []
            unused, pos = [], 0
            for f0 in range(0, nsteps, FRAME):
                k = min(FRAME, nsteps - f0)
                section = raw[pos : pos + self.frame_scale_beats(k) * wb]
                frame_fields.append(self._unpack_fields(section, self.scale_bits, k * count).reshape(k, count))
                unused.append(self._unpack_fields(section, 1, len(section) * 8)[k * count * self.scale_bits :])
                pos += len(section)
                width = packed_width(k * self.step_trits, "base3")
                step_list.append(unpack_trits(raw[pos : pos + width], "base3", k * self.step_trits).reshape(k, -1))
                unused.append(raw[pos + width : pos + self.frame_trit_beats(k) * wb])
                pos += self.frame_trit_beats(k) * wb
            fields, steps = np.concatenate(frame_fields), np.concatenate(step_list)
        scales = fields.reshape(blocks, ng, self.terms, R).transpose(2, 0, 3, 1).reshape(self.terms, blocks * R, ng)
        t = steps.reshape(blocks, ng, cpg, self.planes, R, P)
        trits = t.transpose(3, 0, 4, 1, 2, 5).reshape(self.planes, blocks * R, d_pad)
        unused += [trits[planes:], trits[:, n:], scales[planes : self.planes], scales[:, n:]]
        if not offset and self.offset:
            unused.append(scales[self.planes])
        if any(np.any(u) for u in unused):
            raise ValueError("nonzero padding, or data in a plane, row or offset the layer does not have")
        m_q = scales[self.planes, :n].copy() if offset else None
        return np.ascontiguousarray(trits[:planes, :n]), scales[:planes, :n].copy(), m_q

    def _words(self, packed: np.ndarray, beats: int) -> np.ndarray:
        """Bytes [..., k] zero padded to ``beats`` words."""
        pad = beats * self.word_bytes - packed.shape[-1]
        return np.concatenate([packed, np.zeros((*packed.shape[:-1], pad), np.uint8)], axis=-1)

    @staticmethod
    def _pack_fields(values: np.ndarray, bits: int, nbytes: int) -> np.ndarray:
        """[..., k] signed ints -> [..., nbytes] uint8: field j at bits j*bits.., two's complement."""
        u = values.astype(np.int64) & ((1 << bits) - 1)
        bitarr = ((u[..., None] >> np.arange(bits)) & 1).astype(np.uint8).reshape(*values.shape[:-1], -1)
        pad = nbytes * 8 - bitarr.shape[-1]
        bitarr = np.concatenate([bitarr, np.zeros((*bitarr.shape[:-1], pad), np.uint8)], axis=-1)
        return np.packbits(bitarr, axis=-1, bitorder="little")

    @staticmethod
    def _unpack_fields(data: np.ndarray, bits: int, count: int) -> np.ndarray:
        bitarr = np.unpackbits(data, axis=-1, bitorder="little")[..., : count * bits]
        bitarr = bitarr.reshape(*data.shape[:-1], count, bits).astype(np.int64)
        u = (bitarr << np.arange(bits)).sum(-1)
        return u - ((u >> (bits - 1)) & 1) * (1 << bits)


def pack_activations(x_q: np.ndarray, lanes: int, act_bits: int) -> np.ndarray:
    """The activation stream's beats (docs/SPEC.md 6.4) as 32-bit words: x_q (m, d_pad) ->
    uint32 (m * d_pad / P, ceil(P * A / 32)); lane i of a beat at bits i*A.., two's
    complement, the rest of the last word zero."""
    x = np.asarray(x_q, np.int64)
    m, d_pad = x.shape
    if d_pad % lanes:
        raise ValueError(f"d_pad {d_pad} is not a multiple of the engine's {lanes} lanes")
    beats = m * (d_pad // lanes)
    bits = (x.reshape(beats, lanes, 1) >> np.arange(act_bits)) & 1
    packed = np.packbits(bits.reshape(beats, -1).astype(np.uint8), axis=1, bitorder="little")
    words = np.zeros((beats, 4 * (-(-lanes * act_bits // 32))), np.uint8)
    words[:, : packed.shape[1]] = packed
    return np.ascontiguousarray(words).view("<u4").astype(np.uint32)


def gather_results(values: np.ndarray, tids: np.ndarray, lasts: np.ndarray, n: int, m: int) -> np.ndarray:
    """A run's result beats in the engine's order (docs/SPEC.md 6.4: block by block, each
    block's rows vector by vector, tid = vector) -> accumulators (m, n). ``ValueError`` if
    the last beat carries no tlast or a vector has other than n rows."""
    if not len(lasts) or not lasts[-1]:
        raise ValueError("the run's last result beat carries no tlast")
    rows = np.empty((m, n), np.int64)
    for v in range(m):
        mine = values[tids == v]
        if len(mine) != n:
            raise ValueError(f"vector {v}: {len(mine)} results, expected {n}")
        rows[v] = mine
    return rows
