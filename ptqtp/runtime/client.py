"""The client of the wire protocol (docs/PROTOCOL.md): a remote accelerator as a backend."""

from __future__ import annotations

import json
import socket
import struct
import time
from dataclasses import dataclass

import numpy as np

from ptqtp.formats.wire import HEADER, MAGIC, VERSION, ErrorCode, MsgType, encode_layer, frame, recv_exact
from ptqtp.golden import GoldenLayer

from .backends import Backend

__all__ = ["RemoteBackend", "RemoteError"]


class RemoteError(RuntimeError):
    """The server answered with an ERROR frame."""

    def __init__(self, code: int, message: str):
        super().__init__(f"{ErrorCode.NAMES.get(code, code)}: {message}")
        self.code = code


@dataclass
class RemoteBackend(Backend):
    """Client of a ptqtp server. Raises ``RemoteError`` for ERROR replies, ``TimeoutError``
    when no reply comes within ``timeout`` seconds, ``ConnectionError`` when the server
    goes away (or cannot be reached), and ``ConnectionError`` for a reply of the wrong
    shape or type. A connection the server closed (idle time-out) is reopened and this
    client's layers loaded again, once per request (LOAD and RUN are idempotent)."""

    host: str = "127.0.0.1"
    port: int = 7878
    timeout: float = 30.0
    name = "remote"

    def __post_init__(self):
        self._req = 0
        self._layers: dict[int, GoldenLayer] = {}
        self._sock = None
        self._connect()

    def _connect(self) -> None:
        try:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except TimeoutError:
            raise TimeoutError(f"no connection to {self.host}:{self.port} within {self.timeout} s") from None
        except OSError as e:
            raise ConnectionError(
                f"cannot reach a ptqtp server at {self.host}:{self.port} ({e.strerror or e})"
            ) from None
        try:
            self.info = json.loads(self._exchange(MsgType.HELLO, b"", MsgType.HELLO_OK))
        except ValueError:
            raise ConnectionError(f"{self.host}:{self.port}: HELLO_OK is not JSON") from None
        if not isinstance(self.info, dict) or self.info.get("version") != VERSION:
            raise ConnectionError(f"{self.host}:{self.port}: not a ptqtp v{VERSION} server ({self.info!r:.200})")

    def _exchange(self, msg_type: int, payload: bytes, expect: int) -> bytes:
        self._req = (self._req + 1) & 0xFFFFFFFF
        deadline = time.monotonic() + self.timeout
        try:
            self._sock.sendall(frame(msg_type, self._req, payload))
            head = recv_exact(self._sock, HEADER.size, deadline)
            magic, version, rtype, _, req, length = HEADER.unpack(head)
            if magic != MAGIC or version != VERSION:
                raise _Broken(f"not a ptqtp v{VERSION} server (magic {magic!r}, version {version})")
            body = recv_exact(self._sock, length, deadline)
        except TimeoutError:
            raise TimeoutError(f"no reply from {self.host}:{self.port} within {self.timeout} s") from None
        except _Broken:
            raise
        except (ConnectionError, OSError) as e:
            raise _Lost(f"server {self.host}:{self.port} closed the connection mid-request ({e})") from None
        if rtype == MsgType.ERROR:
            if len(body) < 2:
                raise _Broken("ERROR frame without a code")
            (code,) = struct.unpack_from("<H", body)
            raise RemoteError(code, body[2:].decode(errors="replace"))
        if rtype != expect or req != self._req:
            raise _Broken(f"unexpected reply type {rtype} / id {req} to request {self._req}")
        return body

    def _request(self, msg_type: int, payload: bytes, expect: int) -> bytes:
        try:
            return self._exchange(msg_type, payload, expect)
        except _Lost as first:
            try:  # the server may have closed an idle connection: reopen, reload, retry once
                self._sock.close()
                self._connect()
                for layer_id, layer in self._layers.items():
                    self._exchange(MsgType.LOAD_LAYER, encode_layer(layer_id, layer), MsgType.OK)
                return self._exchange(msg_type, payload, expect)
            except (ConnectionError, TimeoutError):
                raise ConnectionError(str(first)) from None

    def load(self, layer_id: int, layer: GoldenLayer) -> None:
        self._request(MsgType.LOAD_LAYER, encode_layer(layer_id, layer), MsgType.OK)
        self._layers[layer_id] = layer

    def unload(self, layer_id: int) -> None:
        self._layers.pop(layer_id, None)  # the protocol has no UNLOAD: the server frees on close

    def run(self, layer_id: int, x_q: np.ndarray) -> np.ndarray:
        layer = self._layers.get(layer_id)  # the server checks x_q and answers BAD_PAYLOAD / BACKEND_ERROR
        x = np.ascontiguousarray(np.atleast_2d(x_q), dtype="<i4")
        body = self._request(MsgType.RUN, struct.pack("<II", layer_id, x.shape[0]) + x.tobytes(), MsgType.RESULT)
        if len(body) < 8:
            raise ConnectionError(f"{self.host}:{self.port}: RESULT of {len(body)} bytes has no shape")
        m, n = struct.unpack_from("<II", body)
        want_n = layer.n if layer is not None else n
        if (m, n) != (x.shape[0], want_n) or len(body) != 8 + m * n * 8:
            raise ConnectionError(
                f"{self.host}:{self.port}: RESULT is ({m}, {n}) in {len(body) - 8} bytes, expected "
                f"({x.shape[0]}, {want_n}) int64 = {x.shape[0] * want_n * 8} bytes"
            )
        return np.frombuffer(body, "<i8", offset=8).reshape(m, n).astype(np.int64)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()


class _Lost(ConnectionError):
    """The connection went away; a retry on a new one may succeed."""


class _Broken(ConnectionError):
    """The peer does not speak the protocol; no retry."""
