"""The client of the wire protocol (docs/PROTOCOL.md): a remote accelerator as a backend."""

from __future__ import annotations

import json
import socket
import struct
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
    goes away mid-request."""

    host: str = "127.0.0.1"
    port: int = 7878
    timeout: float = 30.0
    name = "remote"

    def __post_init__(self):
        self._req = 0
        self._layers: dict[int, GoldenLayer] = {}
        try:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except (TimeoutError, socket.timeout):
            raise TimeoutError(f"no connection to {self.host}:{self.port} within {self.timeout} s") from None
        self.info = json.loads(self._request(MsgType.HELLO, b"", MsgType.HELLO_OK))

    def _request(self, msg_type: int, payload: bytes, expect: int) -> bytes:
        self._req = (self._req + 1) & 0xFFFFFFFF
        try:
            self._sock.sendall(frame(msg_type, self._req, payload))
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

    def load(self, layer_id: int, layer: GoldenLayer) -> None:
        self._request(MsgType.LOAD_LAYER, encode_layer(layer_id, layer), MsgType.OK)
        self._layers[layer_id] = layer

    def run(self, layer_id: int, x_q: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x_q, dtype="<i4")
        body = self._request(MsgType.RUN, struct.pack("<II", layer_id, x.shape[0]) + x.tobytes(), MsgType.RESULT)
        m, n = struct.unpack_from("<II", body)
        return np.frombuffer(body, "<i8", offset=8).reshape(m, n).astype(np.int64)

    def close(self) -> None:
        self._sock.close()
