"""Socket factories: options, addresses, CURVE keys. The learner binds, actors connect.

Ports: control P (ROUTER <- DEALER), rollouts P+1 (PULL <- PUSH), weights P+2 (PUB -> SUB).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import zmq

CONTROL, ROLLOUTS, WEIGHTS = 0, 1, 2
# Small queues: a slow learner holds actors back instead of letting memory pile up (or the
# data grow old: every rollout queued is policy lag, tests/test_policy_lag.py).
ROLLOUT_HWM = 2
WEIGHTS_HWM = 2
CONNECT_TIMEOUT_MS = 3000
# ZeroMQ's reconnect backoff toward a peer that is gone: 0.2 s, doubling, at most RECONNECT_MAX_MS.
# A learner killed and started again (--resume) is found within this of its binding its ports
# (5 s here made the actors of the chaos benchmark come back 2-6 s after their learner).
RECONNECT_MS = 200
RECONNECT_MAX_MS = 2000
# A peer that has not finished its ZMTP (and CURVE) greeting after this long is dropped, so
# half-open connections do not hold the learner's file descriptors for libzmq's default 30 s.
HANDSHAKE_MS = 10_000


def rollout_tcp_buffer(rollout_bytes: int) -> int:
    """Kernel buffer for rollout sockets: half a rollout at its largest (Linux doubles what is
    set), and never more than 8 KiB.

    Linux grows TCP buffers to megabytes, which holds thousands of small rollouts in flight
    and makes the data old (policy lag) before the learner sees it; at twice this (and a
    ZeroMQ queue of 4) a learner-bound CartPole run trained on rollouts 11 updates old. The
    cap is for images: the bound above counts frames uncompressed, but lz4 sends an Atari
    rollout 50-80x smaller (Pong: 910 KB of frames in 12 KB), so a buffer of half the bound
    held about 150 rollouts a socket and a learner-bound Pong run's policy lag climbed past 17
    updates. 16 KiB in the kernel still moves 60 MB/s over loopback and, at a 50 ms round trip,
    about 5 Airstriker rollouts a second per actor.
    """
    return int(min(max(rollout_bytes // 2, 2048), 8 << 10))


class TransportError(ValueError):
    """A bad address or missing keys, worded as one line."""


def parse_address(address: str) -> tuple[str, int]:
    """`tcp://HOST:PORT` -> (HOST, PORT), the learner's control (base) port."""
    m = re.fullmatch(r"tcp://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})", address.strip())
    if not m or not 1 <= int(m.group(2)) <= 65533:
        raise TransportError(f"learner address must look like tcp://HOST:PORT, got {address!r}")
    return m.group(1), int(m.group(2))


def endpoint(host: str, base_port: int, offset: int) -> str:
    return f"tcp://{host}:{base_port + offset}"


# ---------------------------------------------------------------------------- CURVE


@dataclass(frozen=True)
class CurveKeys:
    """Key material for one side; `server_public` is what a client checks the learner by."""

    public: bytes
    secret: bytes
    server_public: bytes | None = None


def keygen(directory: str | Path, n_actors: int = 1) -> list[Path]:
    """Learner key pair plus `n_actors` actor pairs; actor publics are copied to authorized/.

    An existing learner key pair is kept (actors already trust it) and new actor pairs get
    the next free numbers, so running keygen again adds actors. Secret files are mode 0600.
    """
    import zmq.auth

    if n_actors < 0:
        raise TransportError(f"--actors must not be negative, got {n_actors}")
    root = Path(directory)
    (root / "authorized").mkdir(parents=True, exist_ok=True)
    made: list[Path] = []

    def create(name: str) -> tuple[Path, Path]:
        pub, sec = (Path(p) for p in zmq.auth.create_certificates(root, name))
        sec.chmod(0o600)
        made.extend((pub, sec))
        return pub, sec

    if not (root / "learner.key_secret").exists():
        create("learner")
    i = 0
    for _ in range(n_actors):
        while (root / f"actor{i}.key_secret").exists() or (root / "authorized" / f"actor{i}.key").exists():
            i += 1
        pub, _sec = create(f"actor{i}")
        (root / "authorized" / pub.name).write_bytes(pub.read_bytes())
        made.append(root / "authorized" / pub.name)
    return made


def named_pair(directory: str | Path, name: str) -> CurveKeys:
    """The key pair `name` in `directory` (made on first use, its public key admitted in
    authorized/): how a fleet on Ray gives each unit a pair of its own, kept across restarts."""
    import zmq.auth

    root = Path(directory)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise TransportError(f"bad key name {name!r}")
    if not (root / "learner.key_secret").exists():
        raise TransportError(f"{root / 'learner.key_secret'} missing (make keys with `learner keygen {root}`)")
    secret_file = root / f"{name}.key_secret"
    if not secret_file.exists():
        (root / "authorized").mkdir(exist_ok=True)
        pub, sec = (Path(p) for p in zmq.auth.create_certificates(root, name))
        sec.chmod(0o600)
        tmp = root / "authorized" / f".{pub.name}.tmp"
        tmp.write_bytes(pub.read_bytes())
        tmp.rename(root / "authorized" / pub.name)  # the learner never reads half a key
    public, secret = _load(secret_file, True)
    return CurveKeys(public, secret)


def key_file_text(public: str | bytes, secret: str | bytes | None = None) -> str:
    """A key file's contents (the format `learner keygen` writes) for `public` [and `secret`]."""
    def text(k: str | bytes) -> str:
        return k.decode() if isinstance(k, bytes) else k

    lines = ["#   retrofleet CURVE key", "metadata", "curve", f'    public-key = "{text(public)}"']
    if secret is not None:
        lines.append(f'    secret-key = "{text(secret)}"')
    return "\n".join(lines) + "\n"


def _load(path: Path, need_secret: bool) -> tuple[bytes, bytes | None]:
    import zmq.auth

    if not path.exists():
        raise TransportError(f"key file not found: {path} (make keys with `learner keygen DIR`)")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except Exception as exc:  # pyzmq raises ValueError / OSError on malformed files
        raise TransportError(f"cannot read key file {path}: {exc}") from None
    if need_secret and not secret:
        raise TransportError(f"{path} holds no secret key")
    return public, secret


def read_key(path: str | Path, need_secret: bool = False) -> tuple[bytes, bytes | None]:
    """(public, secret) from a key file; TransportError (one line) when missing or malformed."""
    return _load(Path(path), need_secret)


def learner_keys(curve_dir: str | Path) -> CurveKeys:
    public, secret = _load(Path(curve_dir) / "learner.key_secret", True)
    authorized_dir(curve_dir)
    return CurveKeys(public, secret)


def authorized_dir(curve_dir: str | Path) -> Path:
    """DIR/authorized, which must hold at least one actor public key (*.key)."""
    d = Path(curve_dir) / "authorized"
    if not d.is_dir() or not any(d.glob("*.key")):
        raise TransportError(f"{d} holds no actor public keys (*.key); make some with "
                             f"`learner keygen {curve_dir} --actors N`")
    return d


def actor_keys(secret_file: str | Path, learner_public_file: str | Path) -> CurveKeys:
    public, secret = _load(Path(secret_file), True)
    server_public, _ = _load(Path(learner_public_file), False)
    return CurveKeys(public, secret, server_public)


def apply_curve(sock: zmq.Socket, keys: CurveKeys | None, *, server: bool) -> None:
    if keys is None:
        return
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    if server:
        sock.curve_server = True
    else:
        sock.curve_serverkey = keys.server_public


# ---------------------------------------------------------------------------- sockets


def make_socket(ctx: zmq.Context, kind: int, *, max_bytes: int, keys: CurveKeys | None = None,
                server: bool = False, tcp_buffer: int | None = None) -> zmq.Socket:
    """A socket with the project's options: no linger, size limit, small queues, backoff."""
    sock = ctx.socket(kind)
    sock.linger = 0
    sock.setsockopt(zmq.MAXMSGSIZE, max_bytes)
    sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_MS)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_MAX_MS)
    sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
    sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, 10)
    sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, 5)
    if not server:
        # A connect that hangs (SYNs lost in a network partition) is abandoned and retried, so
        # the link comes back within seconds of the network, not after the OS's ~2 minutes.
        sock.setsockopt(zmq.CONNECT_TIMEOUT, CONNECT_TIMEOUT_MS)
        if kind in (zmq.PUSH, zmq.DEALER):
            # Queue only to a live connection: what was queued for a learner that died is
            # dropped with the connection instead of being delivered to its successor.
            sock.setsockopt(zmq.IMMEDIATE, 1)
    if kind in (zmq.PUSH, zmq.PULL):
        sock.sndhwm = sock.rcvhwm = ROLLOUT_HWM
        if tcp_buffer:
            sock.setsockopt(zmq.SNDBUF if kind == zmq.PUSH else zmq.RCVBUF, tcp_buffer)
    elif kind in (zmq.PUB, zmq.SUB):
        sock.sndhwm = sock.rcvhwm = WEIGHTS_HWM
    if kind == zmq.SUB:
        sock.setsockopt(zmq.SUBSCRIBE, b"")
    if server:
        sock.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_MS)
    elif kind == zmq.DEALER:
        # ZMTP heartbeats on the actor's side only: they tell an actor within seconds that its
        # learner is gone. Never on the learner's sockets: libzmq 4.3.x aborts the whole process
        # (`Assertion failed: !_io_error (stream_engine_base.cpp)`, zeromq/libzmq#4364) when a
        # heartbeat timer fires on a connection whose input is held back (its queue full, as in a
        # flood) after the peer went away. The learner tells live actors by their own heartbeats.
        sock.setsockopt(zmq.HEARTBEAT_IVL, 2000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 6000)
    apply_curve(sock, keys, server=server)
    return sock


# ---------------------------------------------------------------------------- link watch

_WATCHED = (zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_CONNECT_RETRIED
            | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


class LinkWatch:
    """Watches one connecting socket through a ZeroMQ monitor and says in the log when its link
    to the learner is lost, how reconnecting goes (ZeroMQ retries by itself with backoff from
    RECONNECT_IVL to RECONNECT_IVL_MAX) and when it is back, plus CURVE handshake failures.

    `poll()` never blocks; it returns what happened since the last call: "up" (a connection
    made it through its handshake), "back" (that, after a loss), "down" (a good connection was
    lost) and "auth" (the learner refused our CURVE key).
    """

    def __init__(self, sock: zmq.Socket, role: str, log: logging.Logger, *, repeat: float = 15.0):
        self.sock, self.role, self.log, self.repeat = sock, role, log, repeat
        self.mon: zmq.Socket | None = sock.get_monitor_socket(_WATCHED)
        self.down_since: float | None = None
        self.up = False
        self.last_note = 0.0
        self.last_refused = -1e9

    def poll(self) -> list[str]:
        from zmq.utils.monitor import recv_monitor_message

        out: list[str] = []
        while self.mon is not None:
            try:
                ev = recv_monitor_message(self.mon, zmq.NOBLOCK)
            except zmq.Again:
                break
            event, now = ev["event"], time.monotonic()
            where = ev["endpoint"].decode(errors="replace") if isinstance(ev["endpoint"], bytes) else "?"
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                if self.down_since is not None:
                    self.log.info("%s link to the learner at %s is back after %.1f s",
                                  self.role, where, now - self.down_since)
                    out.append("back")
                self.down_since = None
                self.up = True
                out.append("up")
            elif event == zmq.EVENT_DISCONNECTED:
                if not self.up:
                    continue  # a connection that never got through its handshake: said below
                self.up = False
                if self.down_since is None:
                    self.down_since = self.last_note = now
                    self.log.warning("%s link to the learner at %s lost; reconnecting with backoff "
                                     "(%.1f s to %.0f s between tries)", self.role, where,
                                     self.sock.getsockopt(zmq.RECONNECT_IVL) / 1000,
                                     self.sock.getsockopt(zmq.RECONNECT_IVL_MAX) / 1000)
                out.append("down")
            elif event == zmq.EVENT_CONNECT_RETRIED:
                if self.down_since is not None and now - self.last_note >= self.repeat:
                    self.last_note = now
                    self.log.warning("%s link: still no learner at %s after %.0f s; next try in %.1f s",
                                     self.role, where, now - self.down_since, int(ev["value"]) / 1000)
            else:  # a handshake failed: CURVE keys refused or not matching
                if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                    out.append("auth")
                    why = ("the learner refused this actor's CURVE key (is its public key in the "
                           "learner's authorized/ directory?)")
                else:
                    why = ("security handshake failed: do --curve-secret/--curve-server-key match "
                           "the learner's --curve-dir (or does it run without CURVE)?")
                if now - self.last_refused >= self.repeat:
                    self.last_refused = now
                    self.log.error("%s link to %s: %s", self.role, where, why)
        return out

    def close(self) -> None:
        if self.mon is not None:
            try:
                self.sock.disable_monitor()
            except zmq.ZMQError:
                pass
            self.mon.close(0)
            self.mon = None
