"""Actors on a real two-node Ray cluster (`./launch.sh N --ray ...`, `fleet`, Ray Jobs).

The head runs here; the second node runs in a network namespace of its own (a veth pair, its own
Ray temp dir and /dev/shm on tmpfs), so the cluster has two IPs (testkit/localcluster.py). One
cluster serves the whole module; the fleet tests run in order on one fleet: placement, an actor
process killed, scaling, node loss, stop. Needs root; in CI a missing capability is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import (
    BIN,
    ROOT,
    cannot_run,
    free_base_port,
    last_metrics,
    read_actors,
    wait_for,
)

UNITS = 4  # actors (emulators): as 2 actor hosts of 2, one a node (--emulators-per-host auto)
PER_HOST = 2
HOSTS = UNITS // PER_HOST
HEAD_WAIT_S = 10
CARTPOLE = ["--env", "CartPole-v1", "--batch-size", "256", "--report-interval", "0.5"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from testkit.localcluster import LocalCluster, can_make_namespaces

    why = can_make_namespaces()
    if why:
        cannot_run(why)
    # `python` on the nodes is this venv's (as after `source .venv/bin/activate; ray start`):
    # Ray Jobs run their entrypoint with the raylet's PATH.
    env = {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           # how long nodes and drivers wait for a lost head (Ray's default: 60 s)
           "RAY_gcs_rpc_server_reconnect_timeout_s": str(HEAD_WAIT_S)}
    with LocalCluster(tmp_path_factory.mktemp("ray"), nodes=2, cpus=UNITS, env=env) as c:
        yield c


class Fleet:
    def __init__(self, proc: subprocess.Popen, out: Path, run: Path, keys: Path, learner: str):
        self.proc, self.out, self.run, self.keys, self.learner = proc, out, run, keys, learner

    def secrets(self) -> set[str]:
        found = set()
        for f in self.keys.glob("*.key_secret"):
            m = re.search(r'secret-key = "([^"]+)"', f.read_text())
            if m:
                found.add(m.group(1))
        return found


@pytest.fixture(scope="module")
def fleet(cluster, tmp_path_factory):
    """`./launch.sh 4 --ray ADDRESS --actor-mode host` with CURVE keys: a local learner, 4 actors
    in 2 actor hosts placed by Ray (CartPole's MLP would get one-process actors from auto)."""
    tmp = tmp_path_factory.mktemp("fleet")
    keys, run = tmp / "keys", tmp / "run"
    subprocess.run([str(BIN / "learner"), "keygen", str(keys), "--actors", "0"], check=True,
                   capture_output=True)
    port = free_base_port()
    out = tmp / "launch.out"
    with open(out, "wb") as fh:
        proc = subprocess.Popen([str(ROOT / "launch.sh"), str(UNITS), "--ray", cluster.address,
                                 "--node-ip-address", cluster.head_ip, "--curve-dir", str(keys),
                                 "--actor-mode", "host",
                                 *CARTPOLE, "--port", str(port), "--run-dir", str(run)],
                                stdout=fh, stderr=subprocess.STDOUT, env=cluster.driver_env(), cwd=ROOT,
                                start_new_session=True)
    f = Fleet(proc, out, run, keys, f"tcp://{cluster.head_ip}:{port}")
    yield f
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    # Torn down after the module's last test, which kills the head: with it went every unit, and
    # `fleet stop` would only wait on a dead GCS. It stops what a failed test left, if any.
    if any("ActorUnit" in c or "actor.emulator_process" in c for c in cluster.cmdlines().values()):
        cluster.fleet("stop")


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _updates(run: Path) -> int:
    return last_metrics(run).get("updates", 0)


def _all_pids(rows: list[dict]) -> set[int]:
    """Every process of these units: Ray's workers, the hosts, their emulators."""
    return {p for r in rows for p in (r["pid"], r["child_pid"], *r["emulator_pids"]) if p}


def test_units_spread_over_both_nodes_and_train(cluster, fleet):
    t0 = time.monotonic()
    wait_for(lambda: last_metrics(fleet.run).get("actors") == UNITS or fleet.proc.poll() is not None, 180,
             f"{UNITS} actors joined")
    assert fleet.proc.poll() is None, fleet.out.read_text()
    joined = time.monotonic() - t0
    actors = read_actors(fleet.run)
    # the learner saw connections from both nodes' addresses
    assert {a["addr"] for a in actors} == {n.ip for n in cluster.nodes}, actors
    rows = cluster.units()
    assert len(rows) == HOSTS and all(r["state"] == "ALIVE" for r in rows), rows
    assert sorted(r["node_ip"] for r in rows) == sorted(n.ip for n in cluster.nodes), "SPREAD: a host a node"
    # each unit is an actor host: one process speaking for its emulators, each an actor id
    assert all(r["emulators"] == PER_HOST and len(r["emulator_pids"]) == PER_HOST for r in rows), rows
    assert {r["child_pid"] for r in rows} == {a["pid"] for a in actors}
    assert sorted(i for r in rows for i in r["actor_ids"]) == sorted(a["actor_id"] for a in actors)
    assert len(actors) == UNITS
    u0 = _updates(fleet.run)
    wait_for(lambda: _updates(fleet.run) >= u0 + 10, 60, "updates keep coming")
    # CURVE: each unit has a key pair of its own, admitted by the learner; no secret on a command line
    publics = {(fleet.keys / "authorized" / f"retrofleet-unit{i}.key").read_text() for i in range(HOSTS)}
    assert len(publics) == HOSTS
    cmdlines = " ".join(cluster.cmdlines().values())
    assert fleet.secrets() and not any(s in cmdlines for s in fleet.secrets())
    print(f"\nRAY {UNITS} actors in {HOSTS} hosts joined {joined:.1f} s after the first check (launch.sh started before)")


def test_sigkill_of_a_host_process_is_restarted_by_ray_and_counted_again(cluster, fleet):
    before = {r["index"]: r for r in cluster.units()}
    victim = next(r for r in before.values() if r["node_ip"] != cluster.head_ip)
    known = {a["pid"] for a in read_actors(fleet.run)}
    os.kill(victim["child_pid"], signal.SIGKILL)
    killed = time.monotonic()
    # the learner's own record: the new host's emulators joined, and the count is whole again
    def joined():
        new = [a for a in read_actors(fleet.run) if a["pid"] not in known]
        return new if len(new) >= PER_HOST else None

    new = wait_for(joined, 15, f"the new host's {PER_HOST} actors joining the learner")
    wait_for(lambda: last_metrics(fleet.run).get("actors") == UNITS, max(0.5, 15 - (time.monotonic() - killed)),
             f"the learner counting {UNITS} actors again", interval=0.1)
    print(f"\nRAY host process SIGKILL: counted again after {time.monotonic() - killed:.1f} s")
    # it is Ray that restarted it: the same unit, restart count + 1, the new process its child
    row = next(r for r in cluster.units() if r["index"] == victim["index"])
    assert row["restarts"] == victim["restarts"] + 1, row
    assert {a["pid"] for a in new} == {row["child_pid"]}, (new, row)
    assert sorted(a["actor_id"] for a in new) == sorted(row["actor_ids"]), (new, row)
    # the killed host's emulators ended with it (end of file on their act pipes)
    wait_for(lambda: not any(_running(p) for p in victim["emulator_pids"]), 10, "the old emulators ending")
    u0 = _updates(fleet.run)
    wait_for(lambda: _updates(fleet.run) > u0 + 5, 30, "updates after the restart")


def test_scale_down_and_up_while_training(cluster, fleet):
    out = cluster.fleet("scale", "2")  # 2 actors: one host of 2 goes
    assert out.returncode == 0 and "started 0, stopped 1" in out.stdout, out.stdout + out.stderr
    assert sorted(r["index"] for r in cluster.units()) == [0]
    wait_for(lambda: last_metrics(fleet.run).get("actors") == 2, 20, "the learner counting 2 actors")
    u0 = _updates(fleet.run)
    wait_for(lambda: _updates(fleet.run) > u0 + 5, 30, "training on with 2")
    out = cluster.fleet("scale", str(UNITS))
    assert out.returncode == 0 and "started 1, stopped 0" in out.stdout, out.stdout + out.stderr
    wait_for(lambda: last_metrics(fleet.run).get("actors") == UNITS, 60, f"the learner counting {UNITS} again")
    rows = cluster.units()
    assert sorted(r["index"] for r in rows) == list(range(HOSTS))
    assert sum(len(r["actor_ids"]) for r in rows) == UNITS
    assert {r["node_ip"] for r in rows} == {n.ip for n in cluster.nodes}
    u0 = _updates(fleet.run)
    wait_for(lambda: _updates(fleet.run) > u0 + 5, 30, f"training on with {UNITS}")
    assert "units up" in fleet.out.read_text(), "the driver prints status lines"


def test_node_loss_reschedules_its_units_on_the_head(cluster, fleet):
    node = cluster.nodes[1]
    on_node = [r for r in cluster.units() if r["node_ip"] == node.ip]
    assert on_node
    cluster.save_logs()  # the node's Ray logs live on its own tmpfs, gone with it
    cluster.kill_raylet(node)
    killed = time.monotonic()

    def all_on_head():
        rows = cluster.units()
        return len(rows) == HOSTS and all(r["node_ip"] == cluster.head_ip and r["child_pid"] for r in rows)

    wait_for(all_on_head, 60, "the lost node's units running on the head")
    wait_for(lambda: last_metrics(fleet.run).get("actors") == UNITS, max(1.0, 60 - (time.monotonic() - killed)),
             f"the learner counting {UNITS} actors")
    print(f"\nRAY node lost (raylet SIGKILL): units back on the head after {time.monotonic() - killed:.1f} s")
    old = {p for r in on_node for p in (r["child_pid"], *r["emulator_pids"])}
    assert not any(_running(p) for p in old), "the lost node's hosts and emulators are gone"


def test_stop_leaves_no_process_on_any_node(cluster, fleet):
    pids = _all_pids(cluster.units())
    out = cluster.fleet("stop")
    assert out.returncode == 0 and f"stopped {HOSTS}" in out.stdout, out.stdout + out.stderr
    assert fleet.proc.wait(60) == 0, "the driver ends (and stops its learner) once the fleet is stopped"
    text = fleet.out.read_text()
    assert "learner stopped (code 0)" in text, text[-2000:]
    assert not [p for p in pids if _running(p)]
    left = [c for c in cluster.cmdlines().values()
            if "ActorUnit" in c or "actor.emulator_process" in c or fleet.learner in c or str(fleet.run) in c]
    assert not left, left
    assert cluster.units() == []
    # no secret key in any log: the run directory, the driver's output, every node's Ray logs
    cluster.save_logs()
    logs = [fleet.out, *fleet.run.rglob("*.log"), *cluster.workdir.rglob("*")]
    secrets = fleet.secrets()
    for f in logs:
        if f.is_file():
            data = f.read_bytes().decode(errors="replace")
            assert not any(s in data for s in secrets), f"a secret key in {f}"


def test_learner_on_ray_goes_to_the_gpu_node_and_auto_actors_follow_its_pace(cluster, tmp_path):
    """--learner-on-ray: the learner is a Ray actor too, placed on the node that has a GPU;
    --actors auto: as many actors as free CPUs allow to start with (here 3 CPUs an actor;
    --actor-mode auto gives CartPole one-process actors, a unit each), then the count the
    learner's measured pace asks for: a learner slowed to data older than --max-lag gets one fewer."""
    node = cluster.add_node(1, gpus=1)  # the node lost above comes back, now with a (logical) GPU
    run = tmp_path / "run"
    out = tmp_path / "fleet.out"
    with open(out, "wb") as fh:
        proc = subprocess.Popen([str(BIN / "fleet"), "--name", "onray", "--actors", "auto", "--num-cpus", "3",
                                 "--scale-window", "4", "--scale-settle", "4", "--max-lag", "0.5",
                                 "--learner-on-ray", "--", *CARTPOLE, "--update-delay", "0.3",
                                 "--port", str(free_base_port()), "--run-dir", str(run)],
                                stdout=fh, stderr=subprocess.STDOUT, env=cluster.driver_env(), start_new_session=True)
    auto = (2 * UNITS - 1) // 3  # the learner takes 1 of the 2 x 4 CPUs
    try:
        wait_for(lambda: last_metrics(run).get("actors") == auto or proc.poll() is not None, 180,
                 "the units joining the learner on Ray")
        assert proc.poll() is None, out.read_text()
        assert f"learner on Ray at tcp://{node.ip}:" in out.read_text()
        rows = cluster.units("onray")
        # the autoscaler may already have taken one away (the learner is starved at once): then
        # its line is in the output read after the units were listed
        assert len(rows) == auto or (len(rows) == auto - 1 and f"autoscale: {auto} -> {auto - 1} actors"
                                     in out.read_text()), rows
        assert all(r["emulators"] == 1 and not r["emulator_pids"] for r in rows), rows
        # measured on the learner's metrics (read through its Ray actor): starved, so one fewer
        wait_for(lambda: f"autoscale: {auto} -> {auto - 1} actors: learner starved at {auto} (policy lag"
                 in out.read_text() or proc.poll() is not None, 90, "the autoscaler's first change")
        assert proc.poll() is None, out.read_text()
        wait_for(lambda: len(cluster.units("onray")) == auto - 1, 60, "one unit fewer on Ray")
        u0 = _updates(run)
        wait_for(lambda: _updates(run) > u0 + 5, 60, "updates from the learner on Ray")
        learner_pid = next(p for p, c in cluster.cmdlines().items() if "-m learner" in c)
        assert learner_pid in cluster.node_pids(node)
        proc.send_signal(signal.SIGINT)  # Ctrl-C: units, then the learner (final checkpoint)
        assert proc.wait(90) == 130
        assert not _running(learner_pid)
        assert [p for p in (run / "checkpoints").glob("ckpt_*.pt") if p.name != "ckpt_0.pt"], \
            "the learner on Ray wrote its final checkpoint (ckpt_0 is its first, at the start)"
        assert cluster.units("onray") == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        cluster.fleet("stop", "--name", "onray")


def test_ray_job_submit_runs_a_fleet_for_a_learner_elsewhere(cluster, procs, tmp_path):
    """The Ray Jobs way: `ray job submit --working-dir . -- python -m fleet --actors 2 --learner ...`;
    --actor-mode auto asks the learner for its game: CartPole's MLP gets one-process actors."""
    port = free_base_port()
    run = tmp_path / "run"
    procs.learner(*CARTPOLE, "--bind", cluster.head_ip, port=port, run_dir=run)
    ray = str(BIN / "ray")
    dashboard = f"http://127.0.0.1:{cluster.dashboard_port}"
    sub = subprocess.run([ray, "job", "submit", "--address", dashboard, "--working-dir", str(ROOT), "--no-wait",
                          "--", "python", "-m", "fleet", "--name", "job", "--actors", "2", "--learner",
                          f"tcp://{cluster.head_ip}:{port}"], env=cluster.driver_env(), capture_output=True, text=True,
                         timeout=180)
    assert sub.returncode == 0, sub.stdout + sub.stderr
    job = re.search(r"raysubmit_\w+", sub.stdout).group(0)
    try:
        wait_for(lambda: last_metrics(run).get("actors") == 2, 180, "the job's 2 units joining")
        assert {a["addr"] for a in read_actors(run)} <= {n.ip for n in cluster.nodes}
        rows = cluster.units("job")
        assert len(rows) == 2 and all(r["emulators"] == 1 and not r["emulator_pids"] for r in rows), rows
        assert {r["child_pid"] for r in rows} == {a["pid"] for a in read_actors(run)}
        logs = subprocess.run([ray, "job", "logs", "--address", dashboard, job], env=cluster.driver_env(),
                              capture_output=True, text=True, timeout=60).stdout
        assert "[fleet] Ray cluster:" in logs and "[fleet] actor mode process: " in logs, logs
    finally:
        subprocess.run([ray, "job", "stop", "--address", dashboard, job], env=cluster.driver_env(),
                       capture_output=True, text=True, timeout=120)
    wait_for(lambda: cluster.units("job") == [], 60, "the job's units gone after `ray job stop`")


def test_a_node_without_the_drivers_venv_stops_the_fleet_with_one_line(cluster, tmp_path):
    """A venv that exists on the head only (under the Ray temp dir, which is the other node's own
    tmpfs): the fleet refuses to start and names the node and the path."""
    venv = Path(cluster.temp_dir) / "venv-here-only"
    shutil.rmtree(venv, ignore_errors=True)
    (venv / "bin").mkdir(parents=True)
    real = Path(sys.prefix)
    (venv / "pyvenv.cfg").write_text((real / "pyvenv.cfg").read_text())
    (venv / "lib").symlink_to(real / "lib")
    (venv / "bin" / "python").symlink_to(real / "bin" / "python")
    try:
        out = subprocess.run([str(venv / "bin" / "python"), "-m", "fleet", "--name", "novenv", "--actors", "1",
                              "--learner", "tcp://127.0.0.1:5555"], env=cluster.driver_env(), capture_output=True,
                             text=True, timeout=120, cwd=ROOT)
    finally:
        shutil.rmtree(venv, ignore_errors=True)
    assert out.returncode == 2, out.stdout + out.stderr
    err = [line for line in out.stderr.splitlines() if line.startswith("fleet: error:")]
    assert len(err) == 1, out.stderr
    other = next(n.ip for n in cluster.nodes if n.ip != cluster.head_ip)
    assert f"node {other}: {venv}/bin/python does not exist there" in err[0], err[0]
    assert cluster.units("novenv") == []


def test_head_loss_ends_the_units_and_the_learner_saves_its_checkpoint(cluster, tmp_path):
    """Without GCS fault tolerance the head's death ends the cluster: every unit ends within Ray's
    reconnect timeout, and the learner the driver started gets SIGTERM and writes its final
    checkpoint. The module's last test: the cluster does not survive it."""
    run = tmp_path / "run"
    out = tmp_path / "fleet.out"
    with open(out, "wb") as fh:
        proc = subprocess.Popen([str(BIN / "fleet"), "--name", "headloss", "--actors", "2", "--", *CARTPOLE,
                                 "--port", str(free_base_port()), "--run-dir", str(run)],
                                stdout=fh, stderr=subprocess.STDOUT, env=cluster.driver_env(), start_new_session=True)
    try:
        wait_for(lambda: last_metrics(run).get("actors") == 2 or proc.poll() is not None, 180, "2 units joined")
        assert proc.poll() is None, out.read_text()
        children = [p for r in cluster.units("headloss") for p in (r["child_pid"], *r["emulator_pids"])]
        learner = next(c.pid for c in psutil.Process(proc.pid).children() if "learner" in " ".join(c.cmdline()))
        gcs = next(p for p in cluster.node_pids(cluster.nodes[0]) if psutil.Process(p).name() == "gcs_server")
        os.kill(gcs, signal.SIGKILL)
        killed = time.time()
        wait_for(lambda: not any(_running(p) for p in [*children, learner]), HEAD_WAIT_S + 30,
                 "units and learner ending after the head's death")
        proc.wait(30)
        final = max((run / "checkpoints").glob("ckpt_*.pt"), key=lambda p: p.stat().st_mtime)
        assert final.stat().st_mtime > killed, "the learner wrote a final checkpoint after the head died"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
