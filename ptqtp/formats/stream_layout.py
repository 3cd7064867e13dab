"""The weight stream of the streaming engine: how one layer lies in memory (docs/SPEC.md section 6).

The layout belongs to an engine configuration: P lanes, R row units (a power of two),
``planes`` trit planes and ``offset`` support, S-bit scales, a DW-bit memory bus, group
size G. A layer is one contiguous region of DW-bit words, read front to back by the
engine's DMA and consumed in exactly this order::

    for each block b of R rows (rows b*R .. b*R + R-1; rows past n are zero):
        for each group g (G input columns):
            scale record    s_beats words
            weight section  wg_beats words: the group's G/P weight records, packed densely

- Weight record of (b, chunk): W = planes * R * 2P bits; plane k's unit at bit k * R * 2P,
  inside it bit ``r * 2P + 2i`` is the low bit of the 2-bit trit code (00 = 0, 01 = +1,
  11 = -1) of row unit r, lane i (column chunk * P + i). Record j of a group's section
  starts at bit j * W of the section, so W >= DW gives W / DW words per record and W < DW
  gives DW / W records per word; the section is padded with 0 to whole words.
- Scale record of (b, g): terms = planes + offset slots of R fields, S-bit two's
  complement, field (k, r) at bit ``(k * R + r) * S``; slots a_q plane 1, [a_q plane 2],
  [m_q]; padded with 0 to ``s_beats = ceil(terms * R * S / DW)`` words.
- A layer with fewer planes than the engine (PT^2-LLM on a two-plane engine) stores zero
  trits and zero scales in the missing plane; a layer without offsets stores m_q = 0.
- A word's bit j is bit j % 8 of byte j // 8 (little-endian, as AXI puts bytes on the bus).

:class:`StreamLayout` is the one definition; the engine's record unpacker
(``ptqtp.hdl.engine``) reads these bit positions, and ``encode``/``decode`` write and read
them from golden-model arrays. A base-3 weight decoder would sit between the DMA and the
unpacker and change only the weight section.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["StreamLayout"]


def _pack_codes(trits: np.ndarray) -> np.ndarray:
    """int8 trits [..., 4k] -> uint8 [..., k], 2-bit codes, trit 0 in the low bits."""
    codes = (trits & 0b11).astype(np.uint8).reshape(*trits.shape[:-1], -1, 4)
    return codes[..., 0] | (codes[..., 1] << 2) | (codes[..., 2] << 4) | (codes[..., 3] << 6)


def _unpack_codes(data: np.ndarray) -> np.ndarray:
    """uint8 [..., k] -> int8 trits [..., 4k]; ``ValueError`` on the invalid code 0b10."""
    codes = np.stack([(data >> s) & 0b11 for s in (0, 2, 4, 6)], axis=-1).reshape(*data.shape[:-1], -1)
    if (codes == 0b10).any():
        raise ValueError("invalid trit code 0b10 in a weight record")
    return np.array([0, 1, 0, -1], dtype=np.int8)[codes]


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

    def __post_init__(self):
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
            raise ValueError(f"data_width and the weight record (planes * R * 2P = {self.record_bits} bits) "
                             f"must be at least 8 bits")

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
        """wg_beats: words of one group's weight section."""
        return -(-self.chunks_per_group * self.record_bits // self.data_width)

    @property
    def group_beats(self) -> int:
        return self.scale_beats + self.group_weight_beats

    def blocks(self, n: int) -> int:
        return -(-n // self.rows)

    def layer_beats(self, n: int, d_pad: int) -> int:
        """Words of one layer's region."""
        return self.blocks(n) * (d_pad // self.group_size) * self.group_beats

    def layer_bytes(self, n: int, d_pad: int) -> int:
        return self.layer_beats(n, d_pad) * self.word_bytes

    def check_layer(self, planes: int, offset: bool) -> None:
        """``ValueError`` unless a layer with ``planes`` planes (and offsets) runs on this engine."""
        if planes > self.planes or (offset and not self.offset):
            raise ValueError(f"a layer with {planes} plane(s){' and offsets' if offset else ''} does not run on an "
                             f"engine with {self.planes} plane(s){' and offsets' if self.offset else ''}")

    # ------------------------------------------------------------------ encode / decode

    def encode(self, trits: np.ndarray, a_q: np.ndarray, m_q: np.ndarray | None = None) -> bytes:
        """The region of a layer: trits int8 [planes, n, d_pad], a_q [planes, n, ng], m_q [n, ng]."""
        lp, n, d_pad = trits.shape
        R, P, G, wb = self.rows, self.lanes, self.group_size, self.word_bytes
        if d_pad % G or a_q.shape != (lp, n, d_pad // G):
            raise ValueError(f"trits {trits.shape} and a_q {a_q.shape} do not match G={G}")
        self.check_layer(lp, m_q is not None)
        blocks, ng, cpg = self.blocks(n), d_pad // G, self.chunks_per_group
        rows = np.zeros((self.planes, blocks * R, d_pad), np.int8)
        rows[:lp, :n] = trits
        # [planes, blocks, R, ng, cpg, P] -> [blocks, ng, cpg, planes, R, P]: one record per chunk
        t = rows.reshape(self.planes, blocks, R, ng, cpg, P).transpose(1, 3, 4, 0, 2, 5)
        section = _pack_codes(t.reshape(blocks, ng, cpg * self.planes * R * P))
        pad = self.group_weight_beats * wb - section.shape[-1]
        section = np.concatenate([section, np.zeros((blocks, ng, pad), np.uint8)], axis=-1)
        scales = np.zeros((self.terms, blocks * R, ng), np.int64)
        scales[:lp, :n] = a_q
        if m_q is not None:
            scales[self.planes, :n] = m_q
        scales = scales.reshape(self.terms, blocks, R, ng).transpose(1, 3, 0, 2)  # [blocks, ng, terms, R]
        records = self._pack_fields(scales.reshape(blocks, ng, -1), self.scale_bits, self.scale_beats * wb)
        return np.concatenate([records, section], axis=-1).tobytes()

    def decode(self, data: bytes, n: int, d_pad: int, planes: int, offset: bool):
        """Inverse of :meth:`encode` for a layer with ``planes`` planes (and offsets):
        (trits [planes, n, d_pad], a_q [planes, n, ng], m_q [n, ng] or None). ``ValueError``
        on a wrong size, the invalid code, or nonzero data where the layer has none."""
        R, P, G, wb = self.rows, self.lanes, self.group_size, self.word_bytes
        self.check_layer(planes, offset)
        blocks, ng, cpg = self.blocks(n), d_pad // G, self.chunks_per_group
        sbytes = self.scale_beats * wb
        expect = self.layer_bytes(n, d_pad)
        if len(data) != expect:
            raise ValueError(f"region holds {len(data)} bytes, the layer needs {expect}")
        raw = np.frombuffer(data, np.uint8).reshape(blocks, ng, self.group_beats * wb)
        fields = self._unpack_fields(raw[..., :sbytes], self.scale_bits, self.terms * R)
        scales = fields.reshape(blocks, ng, self.terms, R).transpose(2, 0, 3, 1).reshape(self.terms, blocks * R, ng)
        used = cpg * self.record_bits // 8
        t = _unpack_codes(raw[..., sbytes : sbytes + used]).reshape(blocks, ng, cpg, self.planes, R, P)
        trits = t.transpose(3, 0, 4, 1, 2, 5).reshape(self.planes, blocks * R, d_pad)
        unused = [raw[..., sbytes + used :], trits[planes:], trits[:, n:], scales[planes : self.planes], scales[:, n:]]
        if not offset and self.offset:
            unused.append(scales[self.planes])
        if any(np.any(u) for u in unused):
            raise ValueError("nonzero padding, or data in a plane, row or offset the layer does not have")
        m_q = scales[self.planes, :n].copy() if offset else None
        return np.ascontiguousarray(trits[:planes, :n]), scales[:planes, :n].copy(), m_q

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
