"""The server's isolation, limits and time-outs, and the client's checks (docs/PROTOCOL.md)."""

import json
import socket
import struct
import threading
import time

import numpy as np
import pytest
from test_protocol import inputs, layer

from ptqtp.formats.wire import HEADER, MAGIC, ErrorCode, MsgType, encode_layer, frame
from ptqtp.runtime.backends import GoldenBackend
from ptqtp.runtime.client import RemoteBackend, RemoteError
from ptqtp.runtime.server import serve


@pytest.fixture
def running():
    servers = []

    def start(backend=None, **limits):
        srv = serve(backend or GoldenBackend(), **limits)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def reply(sock):
    head = b""
    while len(head) < HEADER.size:
        chunk = sock.recv(HEADER.size - len(head))
        if not chunk:
            return None, None
        head += chunk
    _, _, rtype, _, _, length = HEADER.unpack(head)
    body = b""
    while len(body) < length:
        body += sock.recv(length - len(body))
    return rtype, body


def code(body):
    return struct.unpack_from("<H", body)[0]


def test_clients_have_their_own_layer_ids(running):
    srv = running()
    (ga, _), (gb, _) = layer(n=6, seed=1), layer(n=9, seed=2)
    with RemoteBackend(*srv.server_address, timeout=5) as a, RemoteBackend(*srv.server_address, timeout=5) as b:
        a.load(0, ga)
        b.load(0, gb)
        np.testing.assert_array_equal(a.run(0, inputs(ga)), ga.acc(inputs(ga)))
        np.testing.assert_array_equal(b.run(0, inputs(gb)), gb.acc(inputs(gb)))


def test_a_closed_connection_frees_its_layers(running):
    backend = GoldenBackend()
    srv = running(backend)
    g, _ = layer()
    with RemoteBackend(*srv.server_address, timeout=5) as a:
        for i in range(5):
            a.load(i, g)
        a.load(0, g)  # replacing a layer frees the old one
        assert len(backend.layers) == 5
    deadline = time.monotonic() + 5
    while backend.layers and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backend.layers == {}


def fake_server(answer):
    """A one-connection server that answers HELLO properly and then with ``answer(type, payload)``."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def run():
        conn, _ = listener.accept()
        with conn:
            while True:
                rtype, body = reply(conn)
                if rtype is None:
                    return
                req = 1 if rtype == MsgType.HELLO else None
                if rtype == MsgType.HELLO:
                    conn.sendall(frame(MsgType.HELLO_OK, 1, json.dumps({"version": 1}).encode()))
                else:
                    conn.sendall(answer(rtype, body, req))

    threading.Thread(target=run, daemon=True).start()
    return listener.getsockname()


def test_client_refuses_a_result_of_the_wrong_shape():
    g, _ = layer(n=48, d=64, G=32)
    calls = iter(range(2, 100))

    def answer(rtype, body, _):
        req = next(calls)
        if rtype == MsgType.LOAD_LAYER:
            return frame(MsgType.OK, req)
        return frame(MsgType.RESULT, req, struct.pack("<II", 2, 16) + bytes(2 * 16 * 8))

    with RemoteBackend(*fake_server(answer), timeout=5) as remote:
        remote.load(0, g)
        with pytest.raises(ConnectionError, match=r"RESULT is \(2, 16\).*expected \(5, 48\)"):
            remote.run(0, inputs(g))


def test_a_header_split_over_segments_is_read_whole(running):
    srv = running()
    s = socket.create_connection(srv.server_address, timeout=5)
    data = frame(MsgType.HELLO, 7)
    s.sendall(data[:7])
    time.sleep(0.3)
    s.sendall(data[7:])
    rtype, body = reply(s)
    assert rtype == MsgType.HELLO_OK and json.loads(body)["version"] == 1
    s.close()


def test_oversized_hello_is_refused_before_reading_it(running):
    srv = running()
    s = socket.create_connection(srv.server_address, timeout=5)
    s.sendall(HEADER.pack(MAGIC, 1, MsgType.HELLO, 0, 1, 200 << 20))
    rtype, body = reply(s)
    assert rtype == MsgType.ERROR and code(body) == ErrorCode.TOO_LARGE
    s.close()


def test_layer_count_and_bytes_are_bounded_per_connection(running):
    g, _ = layer()
    size = len(encode_layer(0, g))
    srv = running(max_layers=3, max_layer_bytes=4 * size)
    with RemoteBackend(*srv.server_address, timeout=5) as a:
        for i in range(3):
            a.load(i, g)
        with pytest.raises(RemoteError, match="LIMIT: 3 layers are loaded") as e:
            a.load(3, g)
        assert e.value.code == ErrorCode.LIMIT
        a.load(2, g)  # replacing one is not a new layer
        np.testing.assert_array_equal(a.run(2, inputs(g)), g.acc(inputs(g)))
    srv2 = running(max_layer_bytes=2 * size)
    with RemoteBackend(*srv2.server_address, timeout=5) as b:
        b.load(0, g)
        b.load(1, g)
        with pytest.raises(RemoteError, match="LIMIT: loading .* exceeds"):
            b.load(2, g)


def test_a_result_too_large_is_refused_and_the_connection_kept(running):
    g, _ = layer(n=6)
    srv = running(max_result=6 * 8 * 4)  # four vectors
    with RemoteBackend(*srv.server_address, timeout=5) as a:
        a.load(0, g)
        with pytest.raises(RemoteError, match="TOO_LARGE: a result of m=5 x n=6"):
            a.run(0, inputs(g, m=5))
        np.testing.assert_array_equal(a.run(0, inputs(g, m=4)), g.acc(inputs(g, m=4)))


def test_a_trickled_frame_times_out(running):
    srv = running(frame_timeout=1.0)
    s = socket.create_connection(srv.server_address, timeout=10)
    data = frame(MsgType.HELLO, 1)
    t0 = time.monotonic()
    got = None
    for byte in data:
        try:
            s.sendall(bytes([byte]))
        except OSError:
            break
        time.sleep(0.3)
        s.setblocking(False)
        try:
            got = s.recv(HEADER.size, socket.MSG_PEEK)
        except BlockingIOError:
            pass
        s.setblocking(True)
        if got:
            break
    s.settimeout(5)
    rtype, body = reply(s)
    assert rtype == MsgType.ERROR and code(body) == ErrorCode.TIMEOUT and time.monotonic() - t0 < 3
    s.close()


class SlowForBigLayers(GoldenBackend):
    thread_safe = True

    def run(self, layer_id, x_q):
        if self.layers[layer_id].n > 20:
            time.sleep(2.0)
        return super().run(layer_id, x_q)


def test_independent_clients_are_not_serialised(running):
    srv = running(SlowForBigLayers())
    (big, _), (small, _) = layer(n=30), layer(n=6)
    a = RemoteBackend(*srv.server_address, timeout=10)
    b = RemoteBackend(*srv.server_address, timeout=10)
    a.load(0, big)
    b.load(0, small)
    slow = threading.Thread(target=a.run, args=(0, inputs(big)))
    slow.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    np.testing.assert_array_equal(b.run(0, inputs(small)), small.acc(inputs(small)))
    assert time.monotonic() - t0 < 1.0  # not behind the other client's 2 s RUN
    slow.join()
    a.close()
    b.close()


@pytest.mark.parametrize(
    "edit", [{"G": 0}, {"F": 1e20}, {"F": 10**30}, {"n": 2**40}, {"d_pad": -32}, {"A": 99}, {"n": "6"}, None]
)
def test_bad_layer_fields_get_bad_payload_and_keep_the_connection(running, edit):
    g, _ = layer()
    payload = encode_layer(0, g)
    layer_id, mlen = struct.unpack_from("<II", payload)
    meta = json.loads(payload[8 : 8 + mlen])
    body = payload[8 + mlen :]
    if edit is None:
        new = b"[1, 2]"  # not an object
    else:
        new = json.dumps({**meta, **edit}).encode()
    srv = running()
    with RemoteBackend(*srv.server_address, timeout=5) as a:
        with pytest.raises(RemoteError, match="BAD_PAYLOAD"):
            a._request(MsgType.LOAD_LAYER, struct.pack("<II", 0, len(new)) + new + body, MsgType.OK)
        a.load(0, g)
        np.testing.assert_array_equal(a.run(0, inputs(g)), g.acc(inputs(g)))


def test_connections_beyond_the_limit_get_busy(running):
    srv = running(max_connections=1)
    with RemoteBackend(*srv.server_address, timeout=5):
        s = socket.create_connection(srv.server_address, timeout=5)
        rtype, body = reply(s)
        assert rtype == MsgType.ERROR and code(body) == ErrorCode.BUSY
        s.close()


def test_client_reconnects_after_an_idle_close(running):
    srv = running(idle_timeout=0.3)
    g, _ = layer()
    with RemoteBackend(*srv.server_address, timeout=5) as a:
        a.load(4, g)
        time.sleep(1.0)  # the server closes the idle connection
        np.testing.assert_array_equal(a.run(4, inputs(g)), g.acc(inputs(g)))  # reconnected, layer reloaded


def test_nothing_listening_is_a_connection_error():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(ConnectionError, match=f"cannot reach a ptqtp server at 127.0.0.1:{port}"):
        RemoteBackend("127.0.0.1", port, timeout=2)
