"""The project's sockets (common/transport.py) on real ZeroMQ connections over loopback."""

from __future__ import annotations

import time

import zmq

from common import transport
from tests.conftest import free_base_port


def test_a_learner_that_comes_back_is_found_within_the_reconnect_cap():
    """An actor's socket keeps trying a learner that is gone, backing off from 0.2 s to at most
    2 s between tries (RECONNECT_MAX_MS): a learner started again after 8 s (a SIGKILL and a --resume)
    is connected to within that cap of binding its port. With the earlier cap of 5 s the tries
    fell at about 6.2 s and 11.2 s, and this took 3-5 s."""
    ctx = zmq.Context()
    address = f"tcp://127.0.0.1:{free_base_port()}"
    server = transport.make_socket(ctx, zmq.PULL, max_bytes=1 << 16, server=True)
    client = transport.make_socket(ctx, zmq.PUSH, max_bytes=1 << 16)  # IMMEDIATE: writable only when connected
    try:
        server.bind(address)
        client.connect(address)
        assert client.poll(5000, zmq.POLLOUT), "the first connection never came up"
        client.send(b"before", flags=zmq.NOBLOCK)
        assert server.poll(5000)
        server.recv()
        server.close()  # the learner dies; the client's tries are refused and back off
        time.sleep(8.0)
        assert not client.poll(0, zmq.POLLOUT), "writable with no learner there"
        server = transport.make_socket(ctx, zmq.PULL, max_bytes=1 << 16, server=True)
        server.bind(address)
        t0 = time.monotonic()
        assert client.poll(10_000, zmq.POLLOUT), "never reconnected"
        took = time.monotonic() - t0
        assert took <= 2.6, f"reconnected {took:.1f} s after the bind (the cap: 2 s between tries)"
        client.send(b"after", flags=zmq.NOBLOCK)
        assert server.poll(5000) and server.recv() == b"after"
    finally:
        client.close()
        server.close()
        ctx.term()
