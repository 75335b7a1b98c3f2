"""One program (a retrofleet actor, actor host or learner) run as a child of a Ray actor's process.

The child dies with its parent (PR_SET_PDEATHSIG: SIGTERM when the Ray worker is killed or its
node's raylet goes), its output goes line by line to the parent's stderr (the Ray actor's log:
`ray logs actor --id ID`) and to a callback, and secrets reach it through inherited pipes
(`/dev/fd/N`), never through a file, a command line or a log.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence

_PR_SET_PDEATHSIG = 1


def _death_signal() -> Callable[[], None] | None:
    """A preexec function that asks Linux to SIGTERM the child when its parent thread dies."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not between fork and exec

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return preexec


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Child:
    """`Child(argv, secrets={"key": text}, secret_args=lambda paths: ["--key", paths["key"]])`
    starts argv plus those arguments; each secret is readable once at its path (a pipe).
    Output lines go to `sink` (default: this process's stderr) and then to `on_line`."""

    def __init__(self, argv: Sequence[str], *, on_line: Callable[[str], None] | None = None,
                 secrets: dict[str, str] | None = None, env: dict[str, str] | None = None,
                 cwd: str | None = None, secret_args: Callable[[dict[str, str]], list[str]] | None = None,
                 sink: Callable[[str], None] | None = None):
        self.on_line = on_line
        self.sink = sink or _to_stderr
        pipes: list[tuple[int, int]] = []
        self.secret_paths: dict[str, str] = {}
        for name in secrets or {}:
            r, w = os.pipe()
            pipes.append((r, w))
            self.secret_paths[name] = f"/dev/fd/{r}"
        extra = secret_args(self.secret_paths) if secret_args else []
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        try:
            # pipes are filled before the child starts: a key file is far below a pipe's 64 KiB
            for (_r, w), text in zip(pipes, (secrets or {}).values(), strict=True):
                os.write(w, text.encode())
                os.close(w)
            self.proc = subprocess.Popen([*argv, *extra], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, env=full_env, cwd=cwd,
                                         pass_fds=[r for r, _w in pipes], preexec_fn=_death_signal())
        finally:
            for r, _w in pipes:
                os.close(r)
        self.pid = self.proc.pid
        self._pump = threading.Thread(target=self._relay, name="child-output", daemon=True)
        self._pump.start()

    def _relay(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.sink(line)
            if self.on_line is not None:
                try:
                    self.on_line(line)
                except Exception as exc:  # a parsing slip must not stop the relay
                    print(f"fleet: line handler failed: {exc}", file=sys.stderr, flush=True)

    def wait(self, timeout: float | None = None) -> int:
        rc = self.proc.wait(timeout)
        self._pump.join(1.0)
        return rc

    def poll(self) -> int | None:
        return self.proc.poll()

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM (the programs stop cleanly on it), SIGKILL after `timeout` s; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.wait()
