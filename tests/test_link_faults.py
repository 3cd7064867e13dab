"""A host that survives a failing link: a proxy on loopback drops, stalls and truncates the
traffic between RemoteBackend and a server at random (bounded, seeded); the client
reconnects, checks the device, reloads its layers and re-sends only unanswered requests.
Every result stays bit-exact and the perplexity equals the undisturbed run's."""

import random
import socket
import threading
import time

import numpy as np
import pytest
import torch
from test_hil import small_model

from ptqtp.runtime.backends import GoldenBackend
from ptqtp.runtime.client import RemoteBackend, RemoteError
from ptqtp.runtime.hil import attach_backend
from ptqtp.runtime.server import serve


class FaultyProxy:
    """Forwards loopback connections to ``target``. Each connection carries a random number of
    server replies (``min_replies``..``max_replies`` chunks) and then fails one way: the link
    drops, the peer stalls past the client's deadline, or a reply is cut in half. At most
    ``faults`` failures in all, then it forwards faithfully."""

    def __init__(self, target, seed=0, faults=200, min_replies=18, max_replies=30, stall=0.4):
        self.target, self.rng, self.left = target, random.Random(seed), faults
        self.min_replies, self.max_replies, self.stall = min_replies, max_replies, stall
        self.injected = {"drop": 0, "stall": 0, "truncate": 0}
        self.lock = threading.Lock()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.address = self.listener.getsockname()
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while self.running:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            with self.lock:
                fault = None
                if self.left > 0:
                    self.left -= 1
                    fault = self.rng.choice(("drop", "stall", "truncate"))
                budget = self.rng.randint(self.min_replies, self.max_replies)
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()
            threading.Thread(target=self._replies, args=(server, client, fault, budget), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            s.close()

    def _replies(self, server, client, fault, budget):
        try:
            while data := server.recv(1 << 16):
                budget -= 1
                if fault is not None and budget <= 0:
                    with self.lock:
                        self.injected[fault] += 1
                    if fault == "stall":
                        time.sleep(self.stall)  # past the client's deadline: it gives up first
                    elif fault == "truncate":
                        client.sendall(data[: max(1, len(data) // 2)])
                    break
                client.sendall(data)
        except OSError:
            pass
        for s in (server, client):
            s.close()

    def close(self):
        self.running = False
        self.listener.close()


def nll(model, ids) -> float:
    """Mean next-token negative log-likelihood (the perplexity's logarithm)."""
    with torch.no_grad():
        logits = model(ids).logits[:, :-1].double()
    return float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)))


@pytest.mark.soak
def test_hil_through_200_link_faults_gives_the_same_perplexity():
    windows = [torch.randint(0, 128, (1, 12), generator=torch.Generator().manual_seed(s)) for s in range(40)]
    golden_model, remote_model = small_model(), small_model()
    attach_backend(golden_model, GoldenBackend())
    want = [nll(golden_model, w) for w in windows]
    srv = serve(GoldenBackend())
    proxy = FaultyProxy(srv.server_address, seed=1, faults=200)
    try:
        t0 = time.monotonic()
        with RemoteBackend(*proxy.address, timeout=0.2, retries=4) as remote:
            attach_backend(remote_model, remote)
            got, passes = [], 0
            while proxy.left > 0 and passes < 60:  # until every fault has been injected
                got = [nll(remote_model, w) for w in windows]
                assert got == want  # bit for bit, every pass
                passes += 1
            reconnects = remote.reconnects
        elapsed = time.monotonic() - t0
    finally:
        proxy.close()
        srv.shutdown()
        srv.server_close()
    assert sum(proxy.injected.values()) == 200 and min(proxy.injected.values()) > 30, proxy.injected
    assert reconnects >= 200 and got == want
    assert np.exp(np.mean(got)) == np.exp(np.mean(want))  # the same perplexity
    assert elapsed < 240, elapsed  # no hang: every fault costs at most one deadline


def test_a_different_device_after_a_reconnect_is_refused():
    first, second = serve(GoldenBackend()), serve(GoldenBackend())
    second.backend.name = "other"  # another device behind the same address after a restart
    proxy_target = list(first.server_address)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)

    def forward():
        while True:
            try:
                c, _ = listener.accept()
            except OSError:
                return
            s = socket.create_connection(tuple(proxy_target))
            threading.Thread(target=FaultyProxy._pump, args=(c, s), daemon=True).start()
            threading.Thread(target=FaultyProxy._pump, args=(s, c), daemon=True).start()

    threading.Thread(target=forward, daemon=True).start()
    try:
        from test_protocol import layer

        g, spec = layer()
        with RemoteBackend(*listener.getsockname(), timeout=2) as remote:
            remote.load(0, spec)
            proxy_target[:] = second.server_address
            remote._sock.close()  # the link drops; the reconnect lands on the other device
            with pytest.raises(ConnectionError, match="a different device answers"):
                remote.run(0, np.zeros((1, spec.d_pad), np.int64))
    finally:
        listener.close()
        for s in (first, second):
            s.shutdown()
            s.server_close()


def test_a_token_is_required_beyond_loopback_and_checked_first():
    with pytest.raises(ValueError, match="beyond loopback"):
        serve(GoldenBackend(), host="0.0.0.0")
    srv = serve(GoldenBackend(), token="s3cret")
    try:
        with pytest.raises(RemoteError, match="UNAUTHORIZED"):
            RemoteBackend(*srv.server_address, timeout=2, retries=0)
        with pytest.raises(RemoteError, match="UNAUTHORIZED"):
            RemoteBackend(*srv.server_address, timeout=2, retries=0, token="wrong")
        with RemoteBackend(*srv.server_address, timeout=2, token="s3cret") as ok:
            assert ok.info["backend"] == "golden"
    finally:
        srv.shutdown()
        srv.server_close()
