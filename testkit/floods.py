"""Floods an unauthenticated client can send a learner (issue 8.4, 8.5), for tests and for
`python -m benchmarks.flood`. Each runs in a thread of its own until `stop()`.

- HelloFlood: N DEALER sockets sending hellos as fast as ZeroMQ takes them, then closed at once
  (what brought down a learner with ZMTP heartbeats: zeromq/libzmq#4364);
- ConnectionFlood: N raw TCP connections, each sending half a ZMTP greeting and then nothing;
- PushFlood: one message to the rollout port as fast as it is taken: msgpack object bombs (many
  empty containers, as large as the rollout socket admits), forged rollouts.
"""

from __future__ import annotations

import errno
import socket
import threading
import time

import msgpack
import zmq

from common import protocol


class _ThreadedFlood:
    """Runs `_run` in a daemon thread from `start()` until `stop()`; counts what it sent."""

    def __init__(self, port: int):
        self.port = port
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def _run(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


class HelloFlood(_ThreadedFlood):
    def __init__(self, port: int, sockets: int = 50):
        super().__init__(port)
        self.n = sockets

    def _run(self) -> None:
        ctx = zmq.Context()
        socks = []
        for _ in range(self.n):
            s = ctx.socket(zmq.DEALER)
            s.linger = 0
            s.connect(f"tcp://127.0.0.1:{self.port}")
            socks.append(s)
        hello = protocol.encode("hello", host="flood", pid=0, previous_id=None)
        while not self._stop.is_set():
            progressed = False
            for s in socks:
                try:
                    s.send(hello, zmq.NOBLOCK)
                    self.sent += 1
                    progressed = True
                except zmq.Again:  # its queues are full: the learner holds it back
                    pass
            if not progressed:
                time.sleep(0.001)
        for s in socks:  # all at once, with whatever is still queued
            s.close(0)
        ctx.term()


# ZMTP 3 greeting: signature (10 bytes), version, mechanism... only the signature is sent.
HALF_GREETING = b"\xff" + b"\x00" * 8 + b"\x7f"


class ConnectionFlood:
    """`n` TCP connections to `port` made at once (non-blocking), each sending half a greeting."""

    def __init__(self, port: int, n: int):
        self.port, self.n = port, n
        self.socks: list[socket.socket] = []

    def start(self) -> ConnectionFlood:
        for _ in range(self.n):
            s = socket.socket()
            s.setblocking(False)
            err = s.connect_ex(("127.0.0.1", self.port))
            if err not in (0, errno.EINPROGRESS):
                s.close()
                continue
            self.socks.append(s)
        time.sleep(0.5)
        for s in self.socks:
            try:
                s.send(HALF_GREETING)
            except OSError:  # not accepted yet or already dropped
                pass
        return self

    def stop(self) -> None:
        for s in self.socks:
            s.close()
        self.socks = []


def object_bomb(size: int) -> bytes:
    """A rollout-kind message of `size` bytes that is nothing but empty arrays (a byte each)."""
    start = msgpack.packb({"v": protocol.PROTOCOL_VERSION, "kind": "rollout", "episodes": []})
    n = max(size - len(start) - 4, 1)
    return start[:-1] + b"\xdd" + n.to_bytes(4, "big") + b"\x90" * n  # array32 of n empty arrays


class PushFlood(_ThreadedFlood):
    """One message sent to the rollout port as fast as the learner takes it: object bombs
    (`object_bomb`), forged rollouts..."""

    def __init__(self, port: int, message: bytes):
        super().__init__(port)
        self.message = message

    def _run(self) -> None:
        ctx = zmq.Context()
        s = ctx.socket(zmq.PUSH)
        s.linger = 0
        # a queue of 2, as a real actor's: `sent` then counts what the learner read, give or take
        # a few (ZeroMQ's default of 1,000 parked here made it a count of queued messages)
        s.sndhwm = 2
        s.connect(f"tcp://127.0.0.1:{self.port + 1}")
        while not self._stop.is_set():
            if s.poll(100, zmq.POLLOUT):
                s.send(self.message, zmq.NOBLOCK)
                self.sent += 1
        s.close(0)
        ctx.term()
