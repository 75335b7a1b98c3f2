"""fleet/ pieces that need no Ray cluster: the version check's wording, the driver's option
rules, unit key pairs, secrets through pipes, and a learner admitting keys added while it runs."""

from __future__ import annotations

import subprocess
import sys

import pytest
import zmq.auth

from fleet import layout
from fleet.child import Child
from fleet.cluster import NodeReport, check_versions
from fleet.spec import FleetError, FleetSpec
from fleet.units import ActorIds
from tests.conftest import BIN, free_base_port, last_metrics, read_actors, wait_for

HERE = NodeReport("", "", "3.11.7", "2.60.0", "0.1.0")
PY = "/opt/venv/bin/python"


def test_version_check_names_the_first_node_that_differs():
    same = NodeReport("10.0.0.1", "a", "3.11.7", "2.60.0", "0.1.0")
    assert check_versions([same, same], HERE, PY) is None
    other = NodeReport("10.0.0.2", "b", "3.11.9", "2.61.0", "0.1.0")
    line = check_versions([same, other], HERE, PY)
    assert line == ("node 10.0.0.2 runs Python 3.11.9 (here 3.11.7), Ray 2.61.0 (here 2.60.0) from "
                    "/opt/venv/bin/python; every node needs the same Python, Ray and retrofleet as this driver")
    missing = NodeReport("10.0.0.3", "c", error=f"{PY} does not exist there")
    line = check_versions([same, missing], HERE, PY)
    assert line is not None and line.startswith(f"node 10.0.0.3: {PY} does not exist there; every node needs")
    assert "\n" not in line
    assert check_versions([], HERE, PY) == "the Ray cluster has no alive node"


@pytest.mark.parametrize("argv, error", [
    (["--actors", "many"], "--actors takes a count or auto"),
    (["--num-cpus", "1.5"], "--num-cpus must be a fraction up to 1 or a whole number"),
    (["--num-cpus", "0"], "--num-cpus must be a fraction up to 1 or a whole number"),
    (["--learner", "tcp://h:5555", "--learner-on-ray"], "exclude each other"),
    (["--learner", "tcp://h:5555", "--", "--env", "CartPole-v1"], "belong on the learner's host"),
    (["--learner", "h:5555"], "learner address must look like tcp://HOST:PORT"),
    (["--emulators-per-host", "two"], "--emulators-per-host takes a count"),
    (["--emulators-per-host", "0"], "--emulators-per-host takes a count from 1"),
    (["--actor-mode", "thread"], "--actor-mode takes auto, host or process"),
    (["--scale-window", "0"], "--scale-window and --max-lag must be > 0"),
])
def test_driver_options_refuse_what_cannot_work(argv, error):
    from fleet import driver
    from fleet.__main__ import parser

    with pytest.raises(FleetError, match=error):
        driver.options(parser(None).parse_args(argv))


def test_driver_options_pass_learner_flags_and_fractions():
    from fleet import driver
    from fleet.__main__ import parser

    opts = driver.options(parser(None).parse_args(["--actors", "64", "--num-cpus", "0.5", "--",
                                                    "--env", "CartPole-v1", "--port", "6000"]))
    assert (opts.actors, opts.num_cpus, opts.learner_flags) == ("64", 0.5, ["--env", "CartPole-v1", "--port", "6000"])


def test_spec_round_trips_through_json():
    spec = FleetSpec("f", "tcp://10.0.0.1:5555", PY, actors=3, emulators_per_host=2, num_cpus=0.5,
                     curve_server_key="k" * 40)
    assert FleetSpec.from_json(spec.to_json()) == spec
    assert spec.unit == "host" and FleetSpec("f", "", PY).unit == "actor"


def test_actors_split_into_hosts_the_last_one_taking_the_rest():
    assert layout.split(7, 3) == [3, 3, 1]
    assert layout.split(6, 3) == [3, 3]
    assert layout.split(2, 4) == [2]
    assert layout.split(0, 4) == []
    assert layout.split(3, 0) == [1, 1, 1], "0 (--actor-mode process): one-process actors, a unit each"
    with pytest.raises(FleetError):
        layout.split(-1, 2)


def test_a_host_asks_ray_for_its_emulators_cpus_in_amounts_ray_takes():
    assert layout.unit_cpus(4, 1.0, one_process=False) == 4
    assert layout.unit_cpus(2, 0.25, one_process=False) == 0.5
    assert layout.unit_cpus(3, 0.5, one_process=False) == 2, "1.5 is no amount Ray takes"
    assert layout.unit_cpus(1, 0.5, one_process=True) == 0.5


def test_auto_hosts_spread_the_actors_one_host_a_node_where_it_fits():
    assert layout.auto_per_host(4, [4, 4], 1.0) == 2  # one host of 2 on each node
    assert layout.auto_per_host(64, [16, 16, 16, 16], 1.0) == 16
    assert layout.auto_per_host(64, [16, 8], 1.0) == 8, "no host bigger than the smallest node"
    assert layout.auto_per_host(2, [4, 4], 3.0) == 1
    assert layout.auto_per_host(14, [4, 4], 0.5) == 6, "7 x 0.5 would ask 4 CPUs for 3.5 used"
    with pytest.raises(FleetError, match="no node has 8 CPUs"):
        layout.auto_per_host(2, [4, 4], 8.0)
    assert layout.parse_per_host("auto") is None and layout.parse_per_host("3") == 3


def test_a_units_actor_ids_follow_its_programs_log_lines():
    ids = ActorIds()
    ids.feed("2026-11-23 actor[7] INFO joined tcp://10.0.0.1:5555 as actor 4 (seed 9, env X, mode async)")
    assert ids.ids() == [4]
    ids.feed("actor[7] INFO learner restarted (new session); joining it again as actor 4")
    ids.feed("actor[7] INFO rejoined as actor 11")
    assert ids.ids() == [11]
    host = ActorIds()
    for line in ("actor[8] INFO joined tcp://10.0.0.1:5555 (env X, mode async); 2 emulators, policy on cpu",
                 "actor[8] INFO emulator 0 joined tcp://10.0.0.1:5555 as actor 5 (seed 1, epsilon 0.4, pid 11)",
                 "actor[8] INFO emulator 1 joined tcp://10.0.0.1:5555 as actor 6 (seed 2, epsilon 0.1, pid 12)"):
        host.feed(line)
    assert host.ids() == [5, 6]
    # an emulator started again is a new actor
    host.feed("actor[8] INFO emulator 1 joined tcp://10.0.0.1:5555 as actor 9 (seed 3, epsilon 0.1, pid 13)")
    assert host.ids() == [5, 9]
    # a learner that forgot one: that member joins again, the others keep their ids
    host.feed("actor[8] INFO the learner forgot us; joining it again as actor 9")
    host.feed("actor[8] INFO rejoined as actor 10")
    assert host.ids() == [5, 10]
    host.feed("actor[8] INFO learner restarted (new session); joining it again as actors 5, 10")
    host.feed("actor[8] INFO rejoined as actor 5")
    host.feed("actor[8] INFO rejoined as actor 12")
    assert host.ids() == [5, 12]


def test_unit_key_pairs_are_named_kept_and_admitted(tmp_path):
    from common.transport import TransportError, named_pair

    keys = tmp_path / "keys"
    subprocess.run([str(BIN / "learner"), "keygen", str(keys), "--actors", "0"], check=True, capture_output=True)
    a, b = named_pair(keys, "f-unit0"), named_pair(keys, "f-unit1")
    assert a.public != b.public and a.secret != b.secret
    assert named_pair(keys, "f-unit0") == a, "a unit Ray restarts keeps its pair"
    assert zmq.auth.load_certificate(keys / "authorized" / "f-unit0.key")[0] == a.public
    assert (keys / "f-unit0.key_secret").stat().st_mode & 0o077 == 0
    with pytest.raises(TransportError, match="bad key name"):
        named_pair(keys, "../escape")


def test_child_reads_a_secret_from_a_pipe_never_a_file(tmp_path):
    lines: list[str] = []
    code = "import sys; print('got', open(sys.argv[1]).read().strip())"
    child = Child([sys.executable, "-c", code], secrets={"key": "s3cret"}, on_line=lines.append,
                  secret_args=lambda paths: [paths["key"]], sink=lambda line: None)
    assert child.wait(30) == 0
    assert lines == ["got s3cret"]
    assert child.secret_paths["key"].startswith("/dev/fd/")


def test_learner_admits_keys_added_while_it_runs(procs, tmp_path):
    """`learner keygen DIR --actors 1` again (as a fleet growing does): the new actor gets in
    without restarting the learner."""
    keys, run = tmp_path / "keys", tmp_path / "run"
    subprocess.run([str(BIN / "learner"), "keygen", str(keys), "--actors", "1"], check=True, capture_output=True)
    port = free_base_port()
    procs.learner("--env", "CartPole-v1", "--batch-size", "256", "--curve-dir", str(keys), port=port, run_dir=run)
    subprocess.run([str(BIN / "learner"), "keygen", str(keys), "--actors", "1"], check=True, capture_output=True)
    procs.actor(port, "late", "--curve-secret", str(keys / "actor1.key_secret"),
                "--curve-server-key", str(keys / "learner.key"))
    wait_for(lambda: last_metrics(run).get("actors") == 1, 60, "the actor with the new key joining")
    assert len(read_actors(run)) == 1
    assert "actor keys admitted" in (tmp_path / "learner.log").read_text()
