"""Backends and the TCP protocol (docs/PROTOCOL.md), all on loopback."""

import socket
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from ptqtp.formats.wire import HEADER, MAGIC, ErrorCode, MsgType
from ptqtp.golden import GoldenLayer, IntConfig
from ptqtp.runtime.backends import GoldenBackend, TritonBackend
from ptqtp.runtime.client import RemoteBackend, RemoteError
from ptqtp.runtime.registry import make_backend
from ptqtp.runtime.server import serve


def layer(n=6, d=100, G=32, A=8, S=16, seed=0):
    rng = np.random.default_rng(seed)
    d_pad = -(-d // G) * G
    trits = rng.integers(-1, 2, (2, n, d_pad)).astype(np.int8)
    trits[:, :, d:] = 0
    g = GoldenLayer(trits, rng.standard_normal((2, n, d_pad // G)), d, G, IntConfig(A, S))
    return g, g  # backends load the golden layer itself


def inputs(g, m=5, seed=1):
    Q = g.config.q_max
    x = np.zeros((m, g.d_pad), np.int64)
    x[:, : g.d] = np.random.default_rng(seed).integers(-Q, Q + 1, (m, g.d))
    x[0, : g.d] = Q
    return x


@pytest.mark.parametrize("backend", [GoldenBackend, TritonBackend])
@pytest.mark.parametrize("A,S,G", [(8, 16, 32), (4, 8, 64), (16, 16, 128)])
def test_local_backends_bit_exact(backend, A, S, G):
    g, spec = layer(G=G, A=A, S=S, seed=A)
    with backend() as b:
        b.load(7, spec)
        x = inputs(g)
        np.testing.assert_array_equal(b.run(7, x), g.acc(x))


@pytest.fixture
def server():
    srv = serve(GoldenBackend(), frame_timeout=2.0)
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("inner", [GoldenBackend, TritonBackend])
def test_round_trip_through_server(inner):
    srv = serve(inner())
    try:
        host, port = srv.server_address
        g, spec = layer()
        with RemoteBackend(host, port, timeout=10) as remote:
            assert remote.info["version"] == 1 and remote.info["backend"] == inner.name
            remote.load(3, spec)
            x = inputs(g)
            np.testing.assert_array_equal(remote.run(3, x), g.acc(x))
            np.testing.assert_array_equal(remote.run(3, x[:1]), g.acc(x[:1]))
    finally:
        srv.shutdown()
        srv.server_close()


def raw(server, data: bytes, read=True):
    s = socket.create_connection(server.server_address, timeout=5)
    s.sendall(data)
    if not read:
        return s
    head = s.recv(HEADER.size, socket.MSG_WAITALL)
    magic, _, rtype, _, _, length = HEADER.unpack(head)
    body = s.recv(length, socket.MSG_WAITALL)
    return s, rtype, body


def error_code(body):
    return struct.unpack_from("<H", body)[0]


def test_bad_magic_and_version_get_an_error_then_close(server):
    for frame, code in (
        (b"XXXX" + bytes(12), ErrorCode.BAD_MAGIC),
        (HEADER.pack(MAGIC, 9, MsgType.HELLO, 0, 1, 0), ErrorCode.BAD_VERSION),
    ):
        s, rtype, body = raw(server, frame)
        assert rtype == MsgType.ERROR and error_code(body) == code
        assert s.recv(1) == b""  # connection closed: framing cannot be trusted any more
        s.close()


def test_oversized_and_truncated_frames(server):
    s, rtype, body = raw(server, HEADER.pack(MAGIC, 1, MsgType.RUN, 0, 1, 1 << 30))
    assert rtype == MsgType.ERROR and error_code(body) == ErrorCode.TOO_LARGE
    s.close()
    s = raw(server, HEADER.pack(MAGIC, 1, MsgType.RUN, 0, 1, 100) + b"abc", read=False)  # then silence
    head = s.recv(HEADER.size, socket.MSG_WAITALL)  # server's read timeout is 2 s
    assert HEADER.unpack(head)[2] == MsgType.ERROR
    s.close()
    s = raw(server, HEADER.pack(MAGIC, 1, MsgType.HELLO, 0, 1, 0)[:7], read=False)
    s.close()  # a truncated header from a client that goes away
    # the server keeps serving others
    g, spec = layer()
    with RemoteBackend(*server.server_address, timeout=5) as remote:
        remote.load(1, spec)
        np.testing.assert_array_equal(remote.run(1, inputs(g)), g.acc(inputs(g)))


def test_payload_errors_keep_the_connection(server):
    g, spec = layer()
    with RemoteBackend(*server.server_address, timeout=5) as remote:
        with pytest.raises(RemoteError, match="UNKNOWN_LAYER: layer id 9 is not loaded") as e:
            remote.run(9, inputs(g))
        assert e.value.code == ErrorCode.UNKNOWN_LAYER
        remote.load(1, spec)
        with pytest.raises(RemoteError, match="BAD_PAYLOAD: RUN payload"):
            remote.run(1, inputs(g)[:, :-4])
        with pytest.raises(RemoteError, match="BACKEND_ERROR: x_q values exceed Q"):
            remote.run(1, inputs(g) * 3)
        with pytest.raises(RemoteError, match="BAD_TYPE"):
            remote._request(42, b"", MsgType.OK)
        np.testing.assert_array_equal(remote.run(1, inputs(g)), g.acc(inputs(g)))  # still usable


def test_bad_layer_payload(server):
    with RemoteBackend(*server.server_address, timeout=5) as remote:
        with pytest.raises(RemoteError, match="BAD_PAYLOAD: bad LOAD_LAYER payload"):
            remote._request(MsgType.LOAD_LAYER, struct.pack("<II", 1, 2) + b"{}", MsgType.OK)
        with pytest.raises(RemoteError, match="the layer description must be a JSON object, not list"):
            remote._request(MsgType.LOAD_LAYER, struct.pack("<II", 1, 4) + b"[12]", MsgType.OK)


def test_silent_server_times_out():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="within 0.5 s"):
        RemoteBackend(*listener.getsockname(), timeout=0.5)
    assert time.monotonic() - t0 < 3
    listener.close()


SLOW_SERVER = """
import sys, time
from ptqtp.runtime.backends import GoldenBackend
from ptqtp.runtime.server import serve
class Slow(GoldenBackend):
    def run(self, i, x):
        time.sleep(30)
srv = serve(Slow())
print(srv.server_address[1], flush=True)
time.sleep(60)
"""


def test_killed_server_is_a_clear_error():
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SERVER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        g, spec = layer()
        remote = RemoteBackend("127.0.0.1", port, timeout=20)
        remote.load(1, spec)
        killer = subprocess.Popen(
            [sys.executable, "-c", f"import os, time, signal; time.sleep(1); os.kill({proc.pid}, 9)"]
        )
        t0 = time.monotonic()
        with pytest.raises(ConnectionError, match="closed the connection mid-request"):
            remote.run(1, inputs(g))
        assert time.monotonic() - t0 < 10
        killer.wait()
    finally:
        proc.kill()
        proc.wait()


def test_make_backend_rejects_unknown():
    with pytest.raises(ValueError, match="backend must be one of"):
        make_backend("fpga")


RTL_CYCLES: dict = {}


@pytest.mark.rtl
@pytest.mark.parametrize("bench", ["compiled", "cocotb"])
def test_rtl_backend_persistent_and_through_server(bench):
    """Both benches answer the same requests bit-exact and count the same engine cycles."""
    from ptqtp.hdl.engine_model import EngineParams
    from ptqtp.runtime.engine import EngineBackend

    g, spec = layer(n=5, d=60, G=32)
    params = EngineParams(lanes=8, rows=2, group_size=32, max_d=64, vectors=4, data_width=64, burst=8)
    with EngineBackend(params, bench=bench) as rtl:
        rtl.load(0, spec)
        for seed in (1, 2):  # the same simulator answers several calls
            x = inputs(g, m=3 + 3 * seed, seed=seed)  # 6 and 9 vectors: batches of M = 4
            np.testing.assert_array_equal(rtl.run(0, x), g.acc(x))
        RTL_CYCLES[bench] = rtl.cycles[0]
        if len(RTL_CYCLES) == 2:  # both ran in this process
            assert RTL_CYCLES["compiled"] == RTL_CYCLES["cocotb"]
        srv = serve(rtl)
        try:
            with RemoteBackend(*srv.server_address, timeout=60) as remote:
                remote.load(4, spec)
                np.testing.assert_array_equal(remote.run(4, inputs(g)), g.acc(inputs(g)))
        finally:
            srv.shutdown()
            srv.server_close()


@pytest.mark.rtl
def test_cli_compare_through_every_backend(tmp_path, capsys):
    import torch

    from ptqtp import PTQTPConfig, quantize, save_artifact
    from ptqtp.tools.cli import main

    art = save_artifact(tmp_path / "a.safetensors", {"l": quantize(torch.randn(12, 128) * 0.02, config=PTQTPConfig())})
    srv = serve(GoldenBackend())
    try:
        host, port = srv.server_address
        assert (
            main(
                [
                    "compare",
                    str(art),
                    "--samples",
                    "3",
                    "--lanes",
                    "8",
                    "--rows",
                    "2",
                    "--data-width",
                    "64",
                    "--burst",
                    "8",
                    "--max-d",
                    "128",
                    "--backends",
                    "golden,triton,rtl,remote",
                    "--remote",
                    f"{host}:{port}",
                ]
            )
            == 0
        )
    finally:
        srv.shutdown()
        srv.server_close()
    out = capsys.readouterr().out
    for path in (
        "golden (integer) | 36/36",
        "triton (integer) | 36/36",
        "rtl (integer) | 36/36",
        "remote (integer) | 36/36",
        "triton float (fp32)",
    ):
        assert path in out, out


def pt2_layer(n=6, d=100, G=32, seed=0):
    rng = np.random.default_rng(seed)
    d_pad = -(-d // G) * G
    trits = rng.integers(-1, 2, (1, n, d_pad)).astype(np.int8)
    trits[:, :, d:] = 0
    g = GoldenLayer(trits, rng.standard_normal((1, n, d_pad // G)), d, G, offsets=rng.standard_normal((n, d_pad // G)))
    return g, g  # backends load the golden layer itself


@pytest.mark.parametrize("inner", [GoldenBackend, TritonBackend])
def test_pt2_layer_locally_and_through_server(inner):
    from ptqtp.formats.wire import decode_layer, encode_layer

    g, spec = pt2_layer()
    x = inputs(g)
    with inner() as b:
        b.load(1, spec)
        np.testing.assert_array_equal(b.run(1, x), g.acc(x))
    _, back = decode_layer(encode_layer(1, spec))
    assert np.array_equal(back.m_q, g.m_q) and back.trits.shape[0] == 1
    two_plane = encode_layer(1, layer()[1])
    assert b'"planes"' not in two_plane  # a PTQTP layer's frame is the version-1 frame, unchanged
    srv = serve(inner())
    try:
        with RemoteBackend(*srv.server_address, timeout=10) as remote:
            remote.load(2, spec)
            np.testing.assert_array_equal(remote.run(2, x), g.acc(x))
    finally:
        srv.shutdown()
        srv.server_close()
