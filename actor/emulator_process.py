"""An actor host's emulator process: steps one environment and preprocesses, nothing else.

    python -m actor.emulator_process '<json spec>'    (started by actor.emulator_pool.EmulatorPool)

It loads no policy and no torch: it waits on its act pipe, takes the action from its shared
slot, steps the env (resetting it at an episode's end), writes the result into the slot and
says so on the ready pipe. End of file on the act pipe (the host is gone) or a stop byte ends it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from actor.slots import ACT, SlotLayout, Slots, say_ready
from common.envs import EnvError
from common.runspec import RunSpec


def run(spec: dict) -> int:
    slot, generation = int(spec["slot"]), int(spec["generation"])
    act_fd, ready_fd = int(spec["act_fd"]), int(spec["ready_fd"])
    layout = SlotLayout(int(spec["n"]), tuple(spec["frame_shape"]), spec["frame_dtype"])
    slots = Slots.attach(layout, int(spec["shm_fd"]))
    try:
        env = RunSpec.from_wire(spec["run"]).make_env(int(spec["seed"]))
    except EnvError as exc:
        print(f"emulator {slot}: {exc}", file=sys.stderr, flush=True)
        return 2
    try:
        obs, _ = env.reset(seed=int(spec["seed"]))
        slots.write(slot, obs, 0.0, 0.0, False, False)
        say_ready(ready_fd, slot, generation)
        action, busy, clock = slots.action, slots.busy, time.perf_counter
        while os.read(act_fd, 1) == ACT:
            t0 = clock()
            obs, reward, terminated, truncated, info = env.step(int(action[slot]))
            final = None
            if terminated or truncated:
                final = obs if truncated and not terminated else None
                obs, _ = env.reset()
            slots.write(slot, obs, reward, info.get("raw_reward", reward), terminated, truncated, final,
                        info.get("game_over", True))
            busy[slot] += clock() - t0
            say_ready(ready_fd, slot, generation)
    except BrokenPipeError:
        pass  # the host is gone
    finally:
        env.close()
    return 0


def yield_to_the_host(nice: int, batch: bool) -> None:
    """Emulators give way to their host's inference process, which is on every emulator's
    critical path: a lower priority (`nice` more than the host) and SCHED_BATCH, under which a
    waking emulator does not preempt the running inference."""
    if batch and hasattr(os, "SCHED_BATCH"):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    if nice:
        os.nice(nice)


def main(argv: list[str] | None = None) -> int:
    # Ctrl-C reaches the whole process group; the host decides when its emulators stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(argv[0])
    yield_to_the_host(int(spec.get("nice", 0)), bool(spec.get("sched_batch", False)))
    return run(spec)


if __name__ == "__main__":
    sys.exit(main())
