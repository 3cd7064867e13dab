"""``ptqtp serve``: answer the wire protocol (docs/PROTOCOL.md) from any local backend.

Each connection has its own namespace of layer ids (two clients loading layer 0 get their
own layers) and its own limits (layers, bytes loaded, frame sizes, time to send a frame);
its layers are freed when it closes. Every request gets a reply (an ERROR frame for a bad
one; no request can end the server or leave a traceback in its log), and a connection
whose framing is broken is dropped without affecting other clients. Calls into a backend
that is not thread-safe (a simulator) are serialised; others run concurrently.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import itertools
import json
import socket
import socketserver
import struct
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import numpy as np

from ptqtp.formats.wire import (
    HEADER,
    MAGIC,
    VERSION,
    ErrorCode,
    FrameError,
    MsgType,
    decode_layer,
    error_payload,
    frame,
    recv_exact,
)

from .backends import Backend

__all__ = ["serve", "Limits", "DEFAULT_MAX_PAYLOAD"]

DEFAULT_MAX_PAYLOAD = 64 << 20
_SMALL = 4096  # largest payload of a frame type that carries no tensor (HELLO, OK, ...)


@dataclass(frozen=True)
class Limits:
    """What one connection may use; every value is stated in docs/PROTOCOL.md."""

    max_payload: int = DEFAULT_MAX_PAYLOAD  # bytes of a LOAD_LAYER or RUN payload
    max_result: int = 16 << 20  # bytes of a RESULT payload (m x n x 8)
    max_layers: int = 1024  # layers loaded at once, per connection
    max_layer_bytes: int = 1 << 30  # LOAD_LAYER payload bytes held at once, per connection
    max_connections: int = 16  # connections served at once
    idle_timeout: float = 300.0  # seconds between frames before the connection is closed
    frame_timeout: float = 10.0  # seconds for a whole frame once its first byte arrived


class _Handler(socketserver.BaseRequestHandler):
    def setup(self):
        self.layers: dict[int, tuple[int, object, int]] = {}  # client id -> (backend id, spec, bytes)
        self.held = 0
        self.authorized = self.server.token is None

    def handle(self):
        sock: socket.socket = self.request
        srv = self.server
        if not srv.slots.acquire(blocking=False):
            self._send(
                frame(
                    MsgType.ERROR,
                    0,
                    error_payload(
                        ErrorCode.BUSY, f"{srv.limits.max_connections} connections are open; try again later"
                    ),
                )
            )
            return
        try:
            self._serve(sock)
        finally:
            for bid, _, _ in self.layers.values():
                self._call(srv.backend.unload, bid)
            self.layers.clear()
            srv.slots.release()

    def _send(self, data: bytes) -> bool:
        try:
            self.request.sendall(data)
            return True
        except OSError:
            return False

    def _call(self, fn, *args):
        with self.server.backend_lock:
            return fn(*args)

    def _serve(self, sock: socket.socket):
        limits: Limits = self.server.limits
        while True:
            sock.settimeout(limits.idle_timeout)
            try:
                first = sock.recv(1)
            except OSError:
                return  # idle past the limit, or gone: close (the client reconnects)
            if not first:
                return
            deadline = time.monotonic() + limits.frame_timeout
            req = 0
            try:
                try:
                    head = first + recv_exact(sock, HEADER.size - 1, deadline)
                except TimeoutError:
                    raise FrameError(
                        ErrorCode.TIMEOUT, f"header did not arrive within {limits.frame_timeout} s", fatal=True
                    ) from None
                magic, version, msg_type, _, req, length = HEADER.unpack(head)
                if magic != MAGIC:
                    raise FrameError(ErrorCode.BAD_MAGIC, f"bad magic {magic!r}", fatal=True)
                if version != VERSION:
                    raise FrameError(
                        ErrorCode.BAD_VERSION, f"version {version}, this server speaks {VERSION}", fatal=True
                    )
                cap = limits.max_payload if msg_type in (MsgType.LOAD_LAYER, MsgType.RUN) else _SMALL
                if length > cap:
                    raise FrameError(
                        ErrorCode.TOO_LARGE,
                        f"payload of {length} bytes exceeds {cap} for message type {msg_type}",
                        fatal=True,
                    )
                try:
                    payload = recv_exact(sock, length, deadline)
                except TimeoutError:
                    raise FrameError(
                        ErrorCode.TIMEOUT, f"payload did not arrive within {limits.frame_timeout} s", fatal=True
                    ) from None
                reply_type, reply = self._dispatch(msg_type, payload)
                if not self._send(frame(reply_type, req, reply)):
                    return
            except ConnectionError:
                return
            except FrameError as e:
                if (
                    not self._send(frame(MsgType.ERROR, 0 if e.fatal else req, error_payload(e.code, str(e))))
                    or e.fatal
                ):
                    return
            except Exception as e:  # noqa: BLE001 - a request must never end the connection silently
                if not self._send(
                    frame(MsgType.ERROR, req, error_payload(ErrorCode.BACKEND_ERROR, f"{type(e).__name__}: {e}"))
                ):
                    return

    def _authorize(self, msg_type: int, payload: bytes) -> None:
        """With a token, the first frame must be a HELLO carrying it; nothing else is read."""
        try:
            given = json.loads(payload).get("token") if msg_type == MsgType.HELLO and payload else None
        except (ValueError, AttributeError):
            given = None
        if not isinstance(given, str) or not hmac.compare_digest(given.encode(), self.server.token.encode()):
            raise FrameError(ErrorCode.UNAUTHORIZED, "this server needs its token in the first HELLO", fatal=True)
        self.authorized = True

    def _dispatch(self, msg_type: int, payload: bytes) -> tuple[int, bytes]:
        srv = self.server
        backend: Backend = srv.backend
        limits: Limits = srv.limits
        if not self.authorized:
            self._authorize(msg_type, payload)
        if msg_type == MsgType.HELLO:
            info = {
                "version": VERSION,
                "backend": getattr(backend, "name", "?"),
                "device": backend.device_info(),
                **asdict(limits),
            }
            return MsgType.HELLO_OK, json.dumps(info).encode()
        if msg_type == MsgType.LOAD_LAYER:
            layer_id, spec = decode_layer(payload)
            old = self.layers.get(layer_id)
            held = self.held - (old[2] if old else 0) + len(payload)
            if old is None and len(self.layers) >= limits.max_layers:
                raise FrameError(
                    ErrorCode.LIMIT, f"{limits.max_layers} layers are loaded on this connection", fatal=False
                )
            if held > limits.max_layer_bytes:
                raise FrameError(
                    ErrorCode.LIMIT,
                    f"loading {len(payload)} more bytes exceeds this connection's "
                    f"{limits.max_layer_bytes} bytes of layers",
                    fatal=False,
                )
            bid = next(srv.ids)
            try:
                self._call(backend.load, bid, spec)
            except (ValueError, OverflowError) as e:
                raise FrameError(ErrorCode.BACKEND_ERROR, str(e), fatal=False) from None
            if old is not None:
                self._call(backend.unload, old[0])
            self.layers[layer_id] = (bid, spec, len(payload))
            self.held = held
            # the layer as received: the client checks it against what it sent
            return MsgType.OK, json.dumps({"sha256": hashlib.sha256(payload).hexdigest()}).encode()
        if msg_type == MsgType.RUN:
            if len(payload) < 8:
                raise FrameError(ErrorCode.BAD_PAYLOAD, "RUN payload shorter than 8 bytes", fatal=False)
            layer_id, m = struct.unpack_from("<II", payload)
            if layer_id not in self.layers:
                raise FrameError(ErrorCode.UNKNOWN_LAYER, f"layer id {layer_id} is not loaded", fatal=False)
            bid, spec, _ = self.layers[layer_id]
            n, d_pad = spec.n, spec.d_pad
            if m < 1 or len(payload) != 8 + m * d_pad * 4:
                raise FrameError(
                    ErrorCode.BAD_PAYLOAD,
                    f"RUN payload of {len(payload)} bytes, expected "
                    f"{8 + max(m, 1) * d_pad * 4} for m={m} (>= 1), "
                    f"d_pad={d_pad}",
                    fatal=False,
                )
            if m * n * 8 > limits.max_result:
                raise FrameError(
                    ErrorCode.TOO_LARGE,
                    f"a result of m={m} x n={n} int64 exceeds {limits.max_result} bytes; send fewer vectors per RUN",
                    fatal=False,
                )
            x_q = np.frombuffer(payload, "<i4", offset=8).reshape(m, d_pad).astype(np.int64)
            try:
                acc = self._call(backend.run, bid, x_q)
            except (ValueError, OverflowError) as e:
                raise FrameError(ErrorCode.BACKEND_ERROR, str(e), fatal=False) from None
            return MsgType.RESULT, struct.pack("<II", m, n) + np.ascontiguousarray(acc, "<i8").tobytes()
        raise FrameError(ErrorCode.BAD_TYPE, f"unknown message type {msg_type}", fatal=False)


def _loopback(host: str) -> bool:
    try:
        return all(
            ipaddress.ip_address(info[4][0]).is_loopback
            for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        )
    except (OSError, ValueError):
        return False


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass  # the handler answers every error itself; nothing reaches here but a dropped socket


def serve(
    backend: Backend,
    host: str = "127.0.0.1",
    port: int = 0,
    limits: Limits | None = None,
    background: bool = True,
    token: str | None = None,
    **overrides,
):
    """Start a server answering from ``backend``; returns it (``server.server_address``,
    ``server.shutdown()``). ``limits`` (or keyword overrides of its fields, e.g.
    ``frame_timeout=2``) bound each connection; ``background=False`` serves until interrupted.

    Raises
    ------
    OSError: the address is in use or cannot be bound (``ptqtp serve`` says which).
    """
    limits = Limits(**{**asdict(limits or Limits()), **overrides})
    if token is None and not _loopback(host):
        raise ValueError(f"a server reachable beyond loopback ({host}) needs a shared secret: give a token")
    if token is not None and not token:
        raise ValueError("the token must not be empty")
    server = _Server((host, port), _Handler)
    server.token = token
    server.backend, server.limits = backend, limits
    server.backend_lock = nullcontext() if getattr(backend, "thread_safe", False) else threading.Lock()
    server.slots = threading.BoundedSemaphore(limits.max_connections)
    server.ids = itertools.count()
    if background:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    else:
        server.serve_forever()
    return server
