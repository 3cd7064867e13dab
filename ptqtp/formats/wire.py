"""ptqtp wire protocol v1: frames and payloads (docs/PROTOCOL.md).

Every message is a frame: a 16-byte little-endian header (magic ``PTQP``, version u8,
type u8, flags u16, request id u32, payload length u32) then the payload. A LOAD_LAYER
payload carries one golden layer in fixed point (trits packed 4 per byte, a_q and m_q as
int64), so a server rebuilds exactly the layer the client holds.
"""

from __future__ import annotations

import json
import socket
import struct
import time

import numpy as np
import torch

from ptqtp.golden import GoldenLayer, IntConfig

from .packing import pack_trits, unpack_trits

__all__ = [
    "MAGIC",
    "VERSION",
    "HEADER",
    "MsgType",
    "ErrorCode",
    "FrameError",
    "recv_exact",
    "frame",
    "error_payload",
    "encode_layer",
    "decode_layer",
]

MAGIC, VERSION = b"PTQP", 1
HEADER = struct.Struct("<4sBBHII")  # magic, version, type, flags, request id, payload length


class MsgType:
    HELLO, HELLO_OK, LOAD_LAYER, OK, RUN, RESULT, ERROR = 1, 2, 3, 4, 5, 6, 15


class ErrorCode:
    BAD_MAGIC, BAD_VERSION, BAD_TYPE, TOO_LARGE, BAD_PAYLOAD, UNKNOWN_LAYER, BACKEND_ERROR, TIMEOUT, BUSY, LIMIT = (
        range(1, 11)
    )
    UNAUTHORIZED = 11
    NAMES = {
        1: "BAD_MAGIC",
        2: "BAD_VERSION",
        3: "BAD_TYPE",
        4: "TOO_LARGE",
        5: "BAD_PAYLOAD",
        6: "UNKNOWN_LAYER",
        7: "BACKEND_ERROR",
        8: "TIMEOUT",
        9: "BUSY",
        10: "LIMIT",
        11: "UNAUTHORIZED",
    }


class FrameError(Exception):
    """A request the server answers with an ERROR frame; ``fatal`` also closes the connection."""

    def __init__(self, code: int, message: str, fatal: bool):
        super().__init__(message)
        self.code, self.fatal = code, fatal


def recv_exact(sock: socket.socket, n: int, deadline: float | None = None) -> bytes:
    """Exactly ``n`` bytes from ``sock``, however the peer splits them into segments;
    ``ConnectionError`` if the peer closes first, ``TimeoutError`` if they are not all there
    by ``deadline`` (``time.monotonic()``; a trickle of bytes does not extend it)."""
    buf = bytearray()
    while len(buf) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{n - len(buf)} of {n} bytes still missing at the deadline")
            sock.settimeout(left)
        try:
            chunk = sock.recv(min(n - len(buf), 1 << 20))
        except TimeoutError:
            raise TimeoutError(f"{n - len(buf)} of {n} bytes still missing at the deadline") from None
        if not chunk:
            raise ConnectionError("connection closed mid-frame")
        buf += chunk
    return bytes(buf)


def frame(msg_type: int, request_id: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(MAGIC, VERSION, msg_type, 0, request_id, len(payload)) + payload


def error_payload(code: int, message: str) -> bytes:
    return struct.pack("<H", code) + message.encode()[:4000]


def encode_layer(layer_id: int, spec: GoldenLayer) -> bytes:
    """LOAD_LAYER payload: u32 layer id, u32 JSON length, JSON fields, packed codes, a_q, m_q.
    The permutation stays with the host (x_q arrives in stored column order)."""
    n, d_pad = spec.n, spec.d_pad
    fields = {
        "n": n,
        "d_pad": d_pad,
        "d": spec.d,
        "G": spec.group_size,
        "A": spec.config.act_bits,
        "S": spec.config.scale_bits,
        "F": spec.F,
    }
    if spec.planes != 2 or spec.m_q is not None:  # optional keys: a two-plane layer's frame is unchanged
        fields.update(planes=int(spec.trits.shape[0]), offset=spec.m_q is not None)
    meta = json.dumps(fields).encode()
    codes = pack_trits(torch.from_numpy(np.ascontiguousarray(spec.trits, dtype=np.int8))).numpy().tobytes()
    offsets = b"" if spec.m_q is None else np.ascontiguousarray(spec.m_q, "<i8").tobytes()
    return (
        struct.pack("<II", layer_id, len(meta))
        + meta
        + codes
        + np.ascontiguousarray(spec.a_q, "<i8").tobytes()
        + offsets
    )


def decode_layer(payload: bytes) -> tuple[int, GoldenLayer]:
    """(layer id, golden layer) from a LOAD_LAYER payload; ``FrameError`` BAD_PAYLOAD otherwise."""
    try:
        layer_id, mlen = struct.unpack_from("<II", payload)
        meta = json.loads(payload[8 : 8 + mlen])
        if not isinstance(meta, dict):
            raise ValueError(f"the layer description must be a JSON object, not {type(meta).__name__}")
        n, d_pad, G = (_size(meta, k) for k in ("n", "d_pad", "G"))
        planes, offset = meta.get("planes", 2), meta.get("offset", False)
        if planes not in (1, 2, 3, 4) or isinstance(planes, bool) or not isinstance(offset, bool):
            raise ValueError(f"planes must be 1 to 4 and offset a bool, not {planes!r}, {offset!r}")
        ng = d_pad // G
        body = payload[8 + mlen :]
        ncodes = planes * n * d_pad // 4
        nscales = (planes + offset) * n * ng * 8
        if n < 1 or G < 4 or d_pad % G or len(body) != ncodes + nscales:
            raise ValueError(f"payload holds {len(body)} bytes, the layer needs {ncodes + nscales}")
        codes = torch.frombuffer(bytearray(body[:ncodes]), dtype=torch.uint8).view(planes, n, d_pad // 4)
        trits = unpack_trits(codes).numpy()
        ints = np.frombuffer(body[ncodes:], "<i8").astype(np.int64)
        a_q = ints[: planes * n * ng].reshape(planes, n, ng)
        m_q = ints[planes * n * ng :].reshape(n, ng) if offset else None
        # validates shapes, widths and normalisation
        F = meta["F"]
        if isinstance(F, bool) or not isinstance(F, int) or abs(F) > 4096:
            raise ValueError(f"F must be an integer exponent in [-4096, 4096], not {F!r}")
        spec = GoldenLayer.from_fixed_point(
            trits, a_q, F, _size(meta, "d"), G, IntConfig(int(meta["A"]), int(meta["S"])), m_q
        )
        return layer_id, spec
    except (struct.error, ValueError, KeyError, TypeError, RuntimeError, ArithmeticError, MemoryError) as e:
        raise FrameError(
            ErrorCode.BAD_PAYLOAD, f"bad LOAD_LAYER payload: {type(e).__name__}: {e}", fatal=False
        ) from None


def _size(meta: dict, key: str) -> int:
    v = meta[key]
    if isinstance(v, bool) or not isinstance(v, int) or not 0 < v < 1 << 31:
        raise ValueError(f"{key} must be a positive integer below 2^31, not {v!r}")
    return v
