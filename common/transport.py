"""Socket factories: options, addresses, CURVE keys. The learner binds, actors connect.

Ports: control P (ROUTER <- DEALER), rollouts P+1 (PULL <- PUSH), weights P+2 (PUB -> SUB).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import zmq

CONTROL, ROLLOUTS, WEIGHTS = 0, 1, 2
# Small queues: a slow learner holds actors back instead of letting memory pile up.
ROLLOUT_HWM = 4
WEIGHTS_HWM = 2


def rollout_tcp_buffer(rollout_bytes: int) -> int:
    """Kernel buffer for rollout sockets: about two messages.

    Linux grows TCP buffers to megabytes, which holds thousands of small rollouts in flight
    and makes the data old (policy lag) before the learner sees it.
    """
    return int(min(max(2 * rollout_bytes, 4096), 4 << 20))


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
    """Learner key pair plus `n_actors` actor pairs; actor publics go in authorized/."""
    import zmq.auth

    root = Path(directory)
    (root / "authorized").mkdir(parents=True, exist_ok=True)
    made = list(zmq.auth.create_certificates(root, "learner"))
    for i in range(n_actors):
        pub, sec = zmq.auth.create_certificates(root, f"actor{i}")
        (root / "authorized" / pub.name).write_bytes(pub.read_bytes())
        made += [pub, sec]
    return made


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


def learner_keys(curve_dir: str | Path) -> CurveKeys:
    public, secret = _load(Path(curve_dir) / "learner.key_secret", True)
    return CurveKeys(public, secret)


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
    sock.setsockopt(zmq.RECONNECT_IVL, 200)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 5000)
    sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
    sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, 10)
    sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, 5)
    if kind in (zmq.PUSH, zmq.PULL):
        sock.sndhwm = sock.rcvhwm = ROLLOUT_HWM
        if tcp_buffer:
            sock.setsockopt(zmq.SNDBUF if kind == zmq.PUSH else zmq.RCVBUF, tcp_buffer)
    elif kind in (zmq.PUB, zmq.SUB):
        sock.sndhwm = sock.rcvhwm = WEIGHTS_HWM
    if kind == zmq.SUB:
        sock.setsockopt(zmq.SUBSCRIBE, b"")
    if kind in (zmq.DEALER, zmq.ROUTER):
        sock.setsockopt(zmq.HEARTBEAT_IVL, 2000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 6000)
    apply_curve(sock, keys, server=server)
    return sock
