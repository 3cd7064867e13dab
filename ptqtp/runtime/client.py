"""The client of the wire protocol (docs/PROTOCOL.md): a remote accelerator as a backend."""

from __future__ import annotations

import hashlib
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
    when no reply comes within ``timeout`` seconds, ``ConnectionError`` when the server goes
    away (or cannot be reached), and ``ConnectionError`` for a reply of the wrong shape or type.

    A failing link is survived: a dropped connection, a peer silent past ``timeout`` or a
    truncated reply closes the connection; the client reconnects, checks that the same
    device answers (HELLO_OK's version, backend and device), loads its layers again (each
    checked by the SHA-256 the server returns) and re-sends only the request that had no
    answer, up to ``retries`` times (LOAD and RUN are idempotent). ``token``: the server's
    shared secret, sent in HELLO."""

    host: str = "127.0.0.1"
    port: int = 7878
    timeout: float = 30.0
    retries: int = 3
    token: str | None = None
    name = "remote"

    def __post_init__(self):
        self._req = 0
        self._layers: dict[int, GoldenLayer] = {}
        self._sock = None
        self.reconnects = 0
        self._connect()
        self.identity = self._identity(self.info)

    @staticmethod
    def _identity(info: dict) -> dict:
        return {k: info.get(k) for k in ("version", "backend", "device")}

    def _connect(self) -> None:
        try:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except TimeoutError:
            raise TimeoutError(f"no connection to {self.host}:{self.port} within {self.timeout} s") from None
        except OSError as e:
            raise ConnectionError(
                f"cannot reach a ptqtp server at {self.host}:{self.port} ({e.strerror or e})"
            ) from None
        hello = json.dumps({"token": self.token}).encode() if self.token is not None else b""
        try:
            self.info = json.loads(self._exchange(MsgType.HELLO, hello, MsgType.HELLO_OK))
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
            raise _Stalled(f"no reply from {self.host}:{self.port} within {self.timeout} s") from None
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

    def _check_loaded(self, layer_id: int, payload: bytes, body: bytes) -> None:
        """OK to a LOAD_LAYER carries the layer's SHA-256 as received (servers since the
        link-resilience change; an empty OK is an older server's): a damaged layer is a lost link."""
        if not body:
            return
        try:
            got = json.loads(body).get("sha256")
        except (ValueError, AttributeError):
            got = None
        if got != hashlib.sha256(payload).hexdigest():
            raise _Lost(f"{self.host}:{self.port}: layer {layer_id} arrived damaged (hash {got!r:.20})")

    def _reconnect(self) -> None:
        """A new connection to the same device, with this client's layers loaded again."""
        if self._sock is not None:
            self._sock.close()
        self._connect()
        if self._identity(self.info) != self.identity:
            raise _Broken(
                f"a different device answers at {self.host}:{self.port} now: "
                f"{self._identity(self.info)} instead of {self.identity}"
            )
        for layer_id, layer in self._layers.items():
            payload = encode_layer(layer_id, layer)
            self._check_loaded(layer_id, payload, self._exchange(MsgType.LOAD_LAYER, payload, MsgType.OK))
        self.reconnects += 1

    def _request(self, msg_type: int, payload: bytes, expect: int, check=None) -> bytes:
        """One request, answered once: on a failing link, reconnect and re-send it alone."""
        first: Exception | None = None
        failure: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                if attempt:
                    self._reconnect()
                body = self._exchange(msg_type, payload, expect)
                if check is not None:
                    check(body)
                return body
            except _Broken:
                raise
            except (ConnectionError, TimeoutError) as e:  # lost, stalled, or the reconnect failed
                first, failure = first or e, e
        tried = f"{self.retries} reconnects failed, the last: {failure}" if failure is not first else ""
        message = f"{first}" + (f" ({tried})" if tried else f" ({self.retries} reconnects failed)")
        if isinstance(first, TimeoutError):
            raise TimeoutError(message)
        raise ConnectionError(message)

    def load(self, layer_id: int, layer: GoldenLayer) -> None:
        payload = encode_layer(layer_id, layer)
        self._request(MsgType.LOAD_LAYER, payload, MsgType.OK, lambda body: self._check_loaded(layer_id, payload, body))
        self._layers[layer_id] = layer

    def unload(self, layer_id: int) -> None:
        self._layers.pop(layer_id, None)  # the protocol has no UNLOAD: the server frees on close

    def run(self, layer_id: int, x_q: np.ndarray) -> np.ndarray:
        layer = self._layers.get(layer_id)  # the server checks x_q and answers BAD_PAYLOAD / BACKEND_ERROR
        x = np.ascontiguousarray(np.atleast_2d(x_q), dtype="<i4")

        def check(body: bytes) -> None:
            if len(body) < 8:  # a server that answers wrongly: not a link failure, no retry
                raise _Broken(f"{self.host}:{self.port}: RESULT of {len(body)} bytes has no shape")
            m, n = struct.unpack_from("<II", body)
            want_n = layer.n if layer is not None else n
            if (m, n) != (x.shape[0], want_n) or len(body) != 8 + m * n * 8:
                raise _Broken(
                    f"{self.host}:{self.port}: RESULT is ({m}, {n}) in {len(body) - 8} bytes, expected "
                    f"({x.shape[0]}, {want_n}) int64 = {x.shape[0] * want_n * 8} bytes"
                )

        body = self._request(MsgType.RUN, struct.pack("<II", layer_id, x.shape[0]) + x.tobytes(), MsgType.RESULT, check)
        m, n = struct.unpack_from("<II", body)
        return np.frombuffer(body, "<i8", offset=8).reshape(m, n).astype(np.int64)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()


class _Lost(ConnectionError):
    """The connection went away; a retry on a new one may succeed."""


class _Stalled(TimeoutError):
    """No reply within the deadline; a retry on a new connection may succeed."""


class _Broken(ConnectionError):
    """The peer does not speak the protocol; no retry."""
