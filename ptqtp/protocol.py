"""ptqtp wire protocol v1: run quantized layers on a remote accelerator over TCP.

Specified in docs/PROTOCOL.md. Every message is a frame: a 16-byte little-endian header
(magic ``PTQP``, version u8, type u8, flags u16, request id u32, payload length u32)
then the payload. The client never waits longer than its timeout; the server answers
every well-framed request (an ERROR frame for a bad one) and drops a connection whose
framing is broken, without affecting other clients.
"""

from __future__ import annotations

import json
import socket
import socketserver
import struct
import threading
from dataclasses import dataclass

import numpy as np

from .backends import Backend, LayerSpec

__all__ = ["RemoteBackend", "RemoteError", "serve", "recv_exact", "ErrorCode", "MsgType", "HEADER", "MAGIC", "VERSION"]

MAGIC, VERSION = b"PTQP", 1
HEADER = struct.Struct("<4sBBHII")  # magic, version, type, flags, request id, payload length
DEFAULT_MAX_PAYLOAD = 256 << 20


class MsgType:
    HELLO, HELLO_OK, LOAD_LAYER, OK, RUN, RESULT, ERROR = 1, 2, 3, 4, 5, 6, 15


class ErrorCode:
    BAD_MAGIC, BAD_VERSION, BAD_TYPE, TOO_LARGE, BAD_PAYLOAD, UNKNOWN_LAYER, BACKEND_ERROR, TIMEOUT = range(1, 9)
    NAMES = {1: "BAD_MAGIC", 2: "BAD_VERSION", 3: "BAD_TYPE", 4: "TOO_LARGE", 5: "BAD_PAYLOAD", 6: "UNKNOWN_LAYER",
             7: "BACKEND_ERROR", 8: "TIMEOUT"}


class RemoteError(RuntimeError):
    """The server answered with an ERROR frame."""

    def __init__(self, code: int, message: str):
        super().__init__(f"{ErrorCode.NAMES.get(code, code)}: {message}")
        self.code = code


class _FrameError(Exception):
    def __init__(self, code: int, message: str, fatal: bool):
        super().__init__(message)
        self.code, self.fatal = code, fatal


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Exactly ``n`` bytes from ``sock``; ``ConnectionError`` if the peer closes first."""
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionError("connection closed mid-frame")
        buf += chunk
    return bytes(buf)


def _frame(msg_type: int, request_id: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(MAGIC, VERSION, msg_type, 0, request_id, len(payload)) + payload


def _error_payload(code: int, message: str) -> bytes:
    return struct.pack("<H", code) + message.encode()[:4000]


# ---------------------------------------------------------------- payloads


def encode_layer(layer_id: int, spec: LayerSpec) -> bytes:
    from .packing import pack_trits
    import torch

    n, d_pad = spec.shape
    fields = {"n": n, "d_pad": d_pad, "d": spec.d, "G": spec.group_size, "A": spec.act_bits, "S": spec.scale_bits,
              "F": spec.F}
    if spec.trits.shape[0] != 2 or spec.m_q is not None:  # optional keys: a two-plane layer's frame is unchanged
        fields.update(planes=int(spec.trits.shape[0]), offset=spec.m_q is not None)
    meta = json.dumps(fields).encode()
    codes = pack_trits(torch.from_numpy(np.ascontiguousarray(spec.trits, dtype=np.int8))).numpy().tobytes()
    offsets = b"" if spec.m_q is None else np.ascontiguousarray(spec.m_q, "<i8").tobytes()
    return (struct.pack("<II", layer_id, len(meta)) + meta + codes + np.ascontiguousarray(spec.a_q, "<i8").tobytes()
            + offsets)


def decode_layer(payload: bytes) -> tuple[int, LayerSpec]:
    import torch

    from .packing import unpack_trits

    try:
        layer_id, mlen = struct.unpack_from("<II", payload)
        meta = json.loads(payload[8 : 8 + mlen])
        n, d_pad, G = int(meta["n"]), int(meta["d_pad"]), int(meta["G"])
        planes, offset = meta.get("planes", 2), meta.get("offset", False)
        if planes not in (1, 2) or not isinstance(offset, bool):
            raise ValueError(f"planes must be 1 or 2 and offset a bool, not {planes!r}, {offset!r}")
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
        spec = LayerSpec(trits, a_q, int(meta["d"]), G, int(meta["A"]), int(meta["S"]), int(meta["F"]), m_q)
        spec.golden()  # validates shapes, widths and normalisation
        return layer_id, spec
    except (struct.error, ValueError, KeyError, TypeError, json.JSONDecodeError, RuntimeError) as e:
        raise _FrameError(ErrorCode.BAD_PAYLOAD, f"bad LOAD_LAYER payload: {e}", fatal=False) from None


# ---------------------------------------------------------------- server


class _Handler(socketserver.BaseRequestHandler):
    def handle(self):
        sock: socket.socket = self.request
        sock.settimeout(self.server.read_timeout)
        while True:
            try:
                head = sock.recv(HEADER.size, socket.MSG_WAITALL)
            except (TimeoutError, socket.timeout, OSError):
                return  # idle or gone: drop the connection quietly
            if not head:
                return
            try:
                if len(head) < HEADER.size:
                    raise _FrameError(ErrorCode.BAD_PAYLOAD, "truncated header", fatal=True)
                magic, version, msg_type, _, req, length = HEADER.unpack(head)
                if magic != MAGIC:
                    raise _FrameError(ErrorCode.BAD_MAGIC, f"bad magic {magic!r}", fatal=True)
                if version != VERSION:
                    raise _FrameError(ErrorCode.BAD_VERSION, f"version {version}, this server speaks {VERSION}",
                                      fatal=True)
                if length > self.server.max_payload:
                    raise _FrameError(ErrorCode.TOO_LARGE, f"payload of {length} bytes exceeds "
                                                          f"{self.server.max_payload}", fatal=True)
                try:
                    payload = recv_exact(sock, length)
                except (TimeoutError, socket.timeout):
                    raise _FrameError(ErrorCode.TIMEOUT, "payload did not arrive in time", fatal=True) from None
                except ConnectionError:
                    return
                reply_type, reply = self._dispatch(msg_type, payload)
                sock.sendall(_frame(reply_type, req, reply))
            except _FrameError as e:
                try:
                    sock.sendall(_frame(MsgType.ERROR, 0 if e.fatal else req, _error_payload(e.code, str(e))))
                except OSError:
                    return
                if e.fatal:
                    return

    def _dispatch(self, msg_type: int, payload: bytes) -> tuple[int, bytes]:
        backend: Backend = self.server.backend
        if msg_type == MsgType.HELLO:
            info = {"version": VERSION, "backend": getattr(backend, "name", "?"), "max_payload": self.server.max_payload}
            return MsgType.HELLO_OK, json.dumps(info).encode()
        if msg_type == MsgType.LOAD_LAYER:
            layer_id, spec = decode_layer(payload)
            with self.server.lock:
                self.server.specs[layer_id] = spec
                backend.load(layer_id, spec)
            return MsgType.OK, b""
        if msg_type == MsgType.RUN:
            if len(payload) < 8:
                raise _FrameError(ErrorCode.BAD_PAYLOAD, "RUN payload shorter than 8 bytes", fatal=False)
            layer_id, m = struct.unpack_from("<II", payload)
            spec = self.server.specs.get(layer_id)
            if spec is None:
                raise _FrameError(ErrorCode.UNKNOWN_LAYER, f"layer id {layer_id} is not loaded", fatal=False)
            n, d_pad = spec.shape
            if len(payload) != 8 + m * d_pad * 4:
                raise _FrameError(ErrorCode.BAD_PAYLOAD, f"RUN payload of {len(payload)} bytes, expected "
                                                         f"{8 + m * d_pad * 4} for m={m}, d_pad={d_pad}", fatal=False)
            x_q = np.frombuffer(payload, "<i4", offset=8).reshape(m, d_pad).astype(np.int64)
            try:
                with self.server.lock:
                    acc = backend.run(layer_id, x_q)
            except (ValueError, OverflowError) as e:
                raise _FrameError(ErrorCode.BACKEND_ERROR, str(e), fatal=False) from None
            return MsgType.RESULT, struct.pack("<II", m, n) + np.ascontiguousarray(acc, "<i8").tobytes()
        raise _FrameError(ErrorCode.BAD_TYPE, f"unknown message type {msg_type}", fatal=False)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve(backend: Backend, host: str = "127.0.0.1", port: int = 0, max_payload: int = DEFAULT_MAX_PAYLOAD,
          read_timeout: float = 10.0, background: bool = True):
    """Start a server answering from ``backend``; returns it (``server.server_address``,
    ``server.shutdown()``). ``background=False`` serves until interrupted."""
    server = _Server((host, port), _Handler)
    server.backend, server.max_payload, server.read_timeout = backend, max_payload, read_timeout
    server.lock, server.specs = threading.Lock(), {}
    if background:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    else:
        server.serve_forever()
    return server


# ---------------------------------------------------------------- client


@dataclass
class RemoteBackend(Backend):
    """Client of a ptqtp server. Raises ``RemoteError`` for ERROR replies, ``TimeoutError``
    when no reply comes within ``timeout`` seconds, ``ConnectionError`` when the server
    goes away mid-request."""

    host: str = "127.0.0.1"
    port: int = 7878
    timeout: float = 30.0
    name = "remote"

    def __post_init__(self):
        self._req = 0
        self._specs: dict[int, LayerSpec] = {}
        try:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except (TimeoutError, socket.timeout):
            raise TimeoutError(f"no connection to {self.host}:{self.port} within {self.timeout} s") from None
        self.info = json.loads(self._request(MsgType.HELLO, b"", MsgType.HELLO_OK))

    def _request(self, msg_type: int, payload: bytes, expect: int) -> bytes:
        self._req = (self._req + 1) & 0xFFFFFFFF
        try:
            self._sock.sendall(_frame(msg_type, self._req, payload))
            head = recv_exact(self._sock, HEADER.size)
            magic, version, rtype, _, req, length = HEADER.unpack(head)
            if magic != MAGIC or version != VERSION:
                raise ConnectionError(f"not a ptqtp v{VERSION} server (magic {magic!r}, version {version})")
            body = recv_exact(self._sock, length)
        except (TimeoutError, socket.timeout):
            raise TimeoutError(f"no reply from {self.host}:{self.port} within {self.timeout} s") from None
        except (ConnectionError, OSError) as e:
            raise ConnectionError(f"server {self.host}:{self.port} closed the connection mid-request ({e})") from None
        if rtype == MsgType.ERROR:
            (code,) = struct.unpack_from("<H", body)
            raise RemoteError(code, body[2:].decode(errors="replace"))
        if rtype != expect or req != self._req:
            raise ConnectionError(f"unexpected reply type {rtype} / id {req} to request {self._req}")
        return body

    def load(self, layer_id: int, spec: LayerSpec) -> None:
        self._request(MsgType.LOAD_LAYER, encode_layer(layer_id, spec), MsgType.OK)
        self._specs[layer_id] = spec

    def run(self, layer_id: int, x_q: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x_q, dtype="<i4")
        body = self._request(MsgType.RUN, struct.pack("<II", layer_id, x.shape[0]) + x.tobytes(), MsgType.RESULT)
        m, n = struct.unpack_from("<II", body)
        return np.frombuffer(body, "<i8", offset=8).reshape(m, n).astype(np.int64)

    def close(self) -> None:
        self._sock.close()
