"""``ptqtp serve``: answer the wire protocol (docs/PROTOCOL.md) from any local backend.

The server answers every well-framed request (an ERROR frame for a bad one) and drops a
connection whose framing is broken, without affecting other clients.
"""

from __future__ import annotations

import json
import socket
import socketserver
import struct
import threading

import numpy as np

from ptqtp.formats.wire import HEADER, MAGIC, VERSION, ErrorCode, FrameError, MsgType, decode_layer, error_payload, \
    frame, recv_exact

from .backends import Backend

__all__ = ["serve", "DEFAULT_MAX_PAYLOAD"]

DEFAULT_MAX_PAYLOAD = 256 << 20


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
                    raise FrameError(ErrorCode.BAD_PAYLOAD, "truncated header", fatal=True)
                magic, version, msg_type, _, req, length = HEADER.unpack(head)
                if magic != MAGIC:
                    raise FrameError(ErrorCode.BAD_MAGIC, f"bad magic {magic!r}", fatal=True)
                if version != VERSION:
                    raise FrameError(ErrorCode.BAD_VERSION, f"version {version}, this server speaks {VERSION}",
                                      fatal=True)
                if length > self.server.max_payload:
                    raise FrameError(ErrorCode.TOO_LARGE, f"payload of {length} bytes exceeds "
                                                          f"{self.server.max_payload}", fatal=True)
                try:
                    payload = recv_exact(sock, length)
                except (TimeoutError, socket.timeout):
                    raise FrameError(ErrorCode.TIMEOUT, "payload did not arrive in time", fatal=True) from None
                except ConnectionError:
                    return
                reply_type, reply = self._dispatch(msg_type, payload)
                sock.sendall(frame(reply_type, req, reply))
            except FrameError as e:
                try:
                    sock.sendall(frame(MsgType.ERROR, 0 if e.fatal else req, error_payload(e.code, str(e))))
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
                raise FrameError(ErrorCode.BAD_PAYLOAD, "RUN payload shorter than 8 bytes", fatal=False)
            layer_id, m = struct.unpack_from("<II", payload)
            spec = self.server.specs.get(layer_id)
            if spec is None:
                raise FrameError(ErrorCode.UNKNOWN_LAYER, f"layer id {layer_id} is not loaded", fatal=False)
            n, d_pad = spec.n, spec.d_pad
            if len(payload) != 8 + m * d_pad * 4:
                raise FrameError(ErrorCode.BAD_PAYLOAD, f"RUN payload of {len(payload)} bytes, expected "
                                                         f"{8 + m * d_pad * 4} for m={m}, d_pad={d_pad}", fatal=False)
            x_q = np.frombuffer(payload, "<i4", offset=8).reshape(m, d_pad).astype(np.int64)
            try:
                with self.server.lock:
                    acc = backend.run(layer_id, x_q)
            except (ValueError, OverflowError) as e:
                raise FrameError(ErrorCode.BACKEND_ERROR, str(e), fatal=False) from None
            return MsgType.RESULT, struct.pack("<II", m, n) + np.ascontiguousarray(acc, "<i8").tobytes()
        raise FrameError(ErrorCode.BAD_TYPE, f"unknown message type {msg_type}", fatal=False)


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
