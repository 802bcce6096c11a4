"""The runner's cluster mode (spec §16.2): Redis and N nodes started, connections spread over the
nodes, one-process cases run against every node, cluster cases only there, no Redis no run.

A "cluster" of nodes that each keep a room of their own (tests/unshared_nodes.py) is the
defect the mode exists to catch: its room cases must fail while its one-process cases pass.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from test_conformance import outcomes, run_conformance, selecting

from conformance.cluster import Cluster
from conformance.context import Context
from conformance.registry import REGISTRY, load_cases
from conformance.serverproc import BUNDLED
from conformance.wire import Transcript

ROOT = Path(__file__).resolve().parents[1]
UNSHARED = [
    f"{sys.executable} {ROOT / 'tests' / 'unshared_nodes.py'} {module} --host {{host}} --port {{port}}"
    for module in ("impl_select", "impl_asyncio")
]


def test_connections_go_to_the_nodes_in_turn() -> None:
    listeners = [socket.create_server(("127.0.0.1", 0)) for _ in range(3)]
    try:
        addresses = [sock.getsockname()[:2] for sock in listeners]
        ctx = Context(
            next(iter(load_cases().values())),
            address=addresses[0],
            codec_name="msgpack",
            server=None,
            spawner=None,
            timeout_scale=1.0,
            transcript=Transcript(embed=False),
            addresses=addresses,
        )
        peers = [ctx.peer(f"p{i}") for i in range(7)]
        reached = [peer.sock.getpeername()[:2] for peer in peers]
        assert reached == [addresses[i % 3] for i in range(7)]
        pinned = ctx.peer("pinned", address=addresses[2])
        assert pinned.sock.getpeername()[:2] == addresses[2]
        ctx.close_all()
    finally:
        for sock in listeners:
            sock.close()


def test_a_cluster_runs_node_i_from_template_i_in_turn() -> None:
    cluster = Cluster(tuple(BUNDLED.values()), 3)
    assert [cluster.template_of(i) for i in range(3)] == [
        BUNDLED["impl_select"],
        BUNDLED["impl_asyncio"],
        BUNDLED["impl_select"],
    ]


def test_nodes_that_do_not_share_the_room_fail_its_cases_and_pass_the_process_ones(tmp_path: Path) -> None:
    room_cases = ("WELCOME-CLIENTS", "JOINED-COUNT", "CLUSTER-NAME-RACE")
    globs = (*room_cases, "STARTUP-LISTENING-LINE", "SHUTDOWN-SIGTERM")
    nodes = [arg for template in UNSHARED for arg in ("--server-cmd", template)]
    code, output, results = run_conformance(
        tmp_path, "--cluster-nodes", "2", *nodes, "--name", "unshared", "-v", *selecting(*globs)
    )
    assert code == 1, output[-4000:]
    (result,) = results
    assert not result.errors, result.errors
    seen = outcomes(result)
    for room_case in room_cases:
        assert seen[room_case]["outcome"] == "fail", (room_case, seen[room_case])
    for process_case in ("STARTUP-LISTENING-LINE", "SHUTDOWN-SIGTERM"):
        assert seen[process_case]["outcome"] == "pass", (process_case, seen[process_case])
    # Once against each node: two progress lines each in the verbose output.
    assert output.count("PASS  STARTUP-LISTENING-LINE") == 2, output[-4000:]


def test_cluster_cases_are_not_applicable_to_one_server(tmp_path: Path) -> None:
    load_cases()
    cluster_cases = sorted(case_id for case_id, case in REGISTRY.items() if case.cluster_only)
    assert {"CLUSTER-NODE-DEATH", "CLUSTER-REDIS-RESTART", "CLUSTER-NAME-RACE", "CLUSTER-SAME-VIEW"} <= set(
        cluster_cases
    )
    code, output, results = run_conformance(
        tmp_path, "--server-cmd", BUNDLED["impl_select"], *selecting("CLUSTER-*")
    )
    assert code == 0, output[-4000:]
    for case_id in cluster_cases:
        entry = outcomes(results[0])[case_id]
        assert entry["outcome"] == "skip" and "--cluster-nodes" in entry["message"], entry


def test_without_redis_the_cluster_run_fails_not_skips(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    env_path = os.environ.get("PATH", "")
    os.environ["PATH"] = str(empty)
    try:
        code, output, results = run_conformance(tmp_path, "--cluster-nodes", "2", *selecting("WELCOME-*"))
    finally:
        os.environ["PATH"] = env_path
    assert code == 1, output[-4000:]
    cluster_runs = [run for run in results if run.implementation.startswith("cluster-")]
    assert cluster_runs and all(run.failed and run.errors for run in cluster_runs), output[-4000:]
    assert all("redis-server is not installed" in run.errors[0] for run in cluster_runs)


def test_cluster_nodes_is_checked(tmp_path: Path) -> None:
    for bad in ("1", "17", "two"):
        code, output, _ = run_conformance(tmp_path, "--cluster-nodes", bad)
        assert code == 2 and "--cluster-nodes" in output, output
    code, output, _ = run_conformance(tmp_path, "--cluster-nodes", "2", "--target", "127.0.0.1:1")
    assert code == 2 and "--target" in output, output
    code, output, _ = run_conformance(tmp_path, "--server-cmd", "a {port}", "--server-cmd", "b {port}")
    assert code == 2 and "--cluster-nodes" in output, output
