"""The learner program run by the fleet driver (here) or by a Ray actor (--learner-on-ray).

It binds the node's IP (units on other nodes connect to it), its output goes to
RUN_DIR/learner.log, and the driver shows its latest console line.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from pathlib import Path

from fleet.child import Child
from fleet.spec import FleetError

READY = re.compile(r"^learner ready: (tcp://\S+) \(run dir ([^,]+),")
STATUS = re.compile(r"^\[ *\d+s\]")


class LearnerProcess:
    """`LearnerProcess(python, node_ip, flags)` starts `python -m learner --bind node_ip FLAGS`;
    `.wait_ready()` returns its address once the learner says it is ready."""

    def __init__(self, python: str, node_ip: str, flags: list[str], *, cwd: str | None = None,
                 echo: bool = False, curve_dir: str | None = None):
        self.echo = echo
        self.ready = threading.Event()
        self.address = ""
        self.run_dir: Path | None = None
        self.status_line = ""
        self._early: list[str] = []
        self._log = None
        self._lock = threading.Lock()
        argv = [python, "-m", "learner", "--bind", node_ip, *flags]
        if curve_dir:
            argv += ["--curve-dir", curve_dir]
        self.child = Child(argv, on_line=self._line, cwd=cwd, sink=self._write)

    def _write(self, line: str) -> None:
        with self._lock:
            if self._log is None:
                self._early.append(line)
            else:
                self._log.write(line + "\n")
                self._log.flush()
        if self.echo:
            print(line, file=sys.stderr, flush=True)

    def _line(self, line: str) -> None:
        m = READY.match(line)
        if m and not self.ready.is_set():
            run_dir = Path(m.group(2))
            run_dir.mkdir(parents=True, exist_ok=True)
            with self._lock:
                self._log = open(run_dir / "learner.log", "a")
                self._log.write("\n".join(self._early) + "\n")
                self._log.flush()
                self._early = []
            self.address, self.run_dir = m.group(1), run_dir
            self.ready.set()
        elif STATUS.match(line):
            self.status_line = line

    def wait_ready(self, timeout: float = 180, stop: threading.Event | None = None) -> str:
        """The learner's address once ready; FleetError with its last lines if it exits first
        (or when `stop` is set meanwhile)."""
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.2):
            if stop is not None and stop.is_set():
                self.child.stop()
                raise FleetError("stopped before the learner was ready")
            if self.child.poll() is not None:
                self.child.wait()
                with self._lock:
                    tail = " | ".join(self._early[-4:])
                raise FleetError(f"the learner exited with code {self.child.proc.returncode} before it "
                                 f"was ready: {tail}")
            if time.monotonic() > deadline:
                self.child.stop()
                raise FleetError(f"the learner was not ready within {timeout:.0f} s")
        return self.address

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM: the learner writes its final checkpoint and exits."""
        rc = self.child.stop(timeout)
        self.close()
        return rc

    def close(self) -> None:
        with self._lock:
            if self._log is not None:
                self._log.close()
                self._log = None
