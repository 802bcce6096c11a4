"""The pytest plugin that runs the cases against one server and records one result per case.

The runner passes a :class:`ConformancePlugin` to ``pytest.main`` in-process. The plugin
provides the ``ctx`` fixture (a :class:`~conformance.context.Context`), starts and stops
servers, skips what a run cannot do, and turns pytest's reports into :class:`CaseResult`.
"""

from __future__ import annotations

import fnmatch
import signal
import sys
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import TextIO

import pytest

from protocol import Left, Roster, Who, get_codec

from .cluster import Cluster
from .context import Context, Spawner
from .registry import CASE_ATTRIBUTE, REGISTRY, Case, Level, Settings
from .serverproc import ServerFailed, ServerProcess
from .wire import PLAIN, Security, Transcript, WirePeer

CONTEXT = pytest.StashKey[Context]()
#: Progress marks, one per case, and the legend the runner prints before them.
MARKS = {"pass": ".", "fail": "F", "warn": "w", "skip": "s"}
PROGRESS_LEGEND = "progress: . pass   F fail   w warn (a SHOULD case failed)   s skip"


@dataclass
class RunOptions:
    """What to run the cases against, and how.

    Exactly one of ``template`` (a command with ``{host}`` and ``{port}``, optionally
    ``{codec}``) and ``target`` (an address) is set.
    """

    name: str
    codec: str = "msgpack"
    template: str | None = None
    target: tuple[str, int] | None = None
    host: str = "127.0.0.1"
    timeout_scale: float = 1.0
    #: Whether the runner may append ``--codec``, ``--hello-timeout``, ... to the template.
    config_flags: bool = True
    selection: tuple[str, ...] = ()
    case_budget: float = 90.0
    verbose: bool = False
    strict: bool = False
    out: TextIO = field(default_factory=lambda: sys.stdout)
    #: When set, every case is skipped with this reason (a codec the server does not offer).
    skip_all: str = ""
    #: TLS and the token every connection uses (§16.1 rule 5).
    security: Security = PLAIN
    #: Judge a cluster of this many nodes (§16.2) instead of one server; 0 for one server.
    cluster_nodes: int = 0
    #: The nodes' command templates, node ``i`` running ``i % len``; ``(template,)`` if empty.
    cluster_templates: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.name}/{self.codec}"


@dataclass
class CaseResult:
    """The outcome of one case: pass, fail, warn (a failed SHOULD case), or skip."""

    case: Case
    outcome: str = "pass"
    duration: float = 0.0
    message: str = ""
    transcript: str = ""


class CaseTimeout(AssertionError):
    """The case as a whole ran over its time budget."""


class ServerPool:
    """Servers of one run: one shared server per settings per module, plus servers of their own.

    In a cluster run each "server" is a :class:`~conformance.cluster.Cluster`.
    """

    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.shared: dict[Settings, ServerProcess | Cluster] = {}
        self.dirty: set[Settings] = set()

    def args(self, settings: Settings, codec_flag: bool = True) -> list[str]:
        """The flags appended to the run's template for ``settings``."""
        options = self.options
        assert options.template is not None
        args: list[str] = []
        if codec_flag and options.config_flags and "{codec}" not in options.template:
            args += ["--codec", options.codec]
        return args + settings.args()

    def start(
        self, settings: Settings, codec_flag: bool = True, host: str | None = None, port: int | None = None
    ) -> ServerProcess:
        options = self.options
        assert options.template is not None
        process = ServerProcess(
            options.template,
            host=host or options.host,
            port=port,
            extra_args=self.args(settings, codec_flag),
            codec=options.codec,
            start_timeout=10.0 * options.timeout_scale,
        )
        return process.start()

    def cluster(self, settings: Settings, nodes: int | None = None) -> Cluster:
        """A started cluster of the run's nodes (or of ``nodes`` of them: 0 is Redis alone)."""
        options = self.options
        assert options.template is not None
        cluster = Cluster(
            options.cluster_templates or (options.template,),
            options.cluster_nodes if nodes is None else nodes,
            host=options.host,
            extra_args=self.args(settings),
            codec=options.codec,
            start_timeout=10.0 * options.timeout_scale,
        )
        return cluster.start()

    def node_spawner(self, cluster: Cluster, index: int) -> Spawner:
        """``ctx.spawn`` in a cluster run: one more node, running node ``index``'s command."""

        def spawn(settings: Settings, codec_flag: bool, host: str | None, port: int | None) -> ServerProcess:
            return cluster.spawn_node(index, extra_args=self.args(settings, codec_flag), host=host, port=port)

        return spawn

    def own(self, settings: Settings) -> ServerProcess | Cluster:
        return self.cluster(settings) if self.options.cluster_nodes else self.start(settings)

    def shared_server(self, settings: Settings) -> ServerProcess | Cluster:
        process = self.shared.get(settings)
        if process is not None and (settings in self.dirty or not process.alive()):
            process.stop()
            del self.shared[settings]
            self.dirty.discard(settings)
            process = None
        if process is None:
            process = self.shared[settings] = self.own(settings)
        return process

    def stop_shared(self) -> None:
        for process in self.shared.values():
            process.stop()
        self.shared.clear()
        self.dirty.clear()


#: Why a case that needs a feature of §17 does not apply, by what it needs.
_NOT_TOLD = {
    "tls": "not applicable: the run was not told that the server serves TLS (--tls, §17.1)",
    "auth": "not applicable: the run was not given a token the server admits (--auth-token, §17.3)",
    "reserved": "not applicable: the run was not given a name the server reserves (--auth-reserved, §17.3)",
}


def _skip_reason(case: Case, options: RunOptions) -> str | None:
    if options.skip_all:
        return options.skip_all
    security = options.security
    offered = {
        "tls": security.tls is not None,
        "auth": security.token is not None,
        "reserved": security.reserved_name is not None,
    }
    for need in case.needs:
        if not offered[need]:
            return _NOT_TOLD[need]
    if case.cluster_only and not options.cluster_nodes:
        return "not applicable: a room served by several nodes only (--cluster-nodes N, §16.2)"
    if options.codec not in case.codecs:
        return f"applies to the {' and '.join(case.codecs)} codec only"
    if options.target is not None:
        if case.process:
            return "needs to start, signal or measure the server process itself (not possible with --target)"
        if case.settings:
            return f"needs a server started with {case.settings.describe()} (not possible with --target)"
    elif case.settings and not options.config_flags:
        return f"needs a server started with {case.settings.describe()} (server flags are disabled)"
    return None


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise CaseTimeout("the case ran over its time budget")


class ConformancePlugin:
    """Passed to ``pytest.main(plugins=[...])``; collects :attr:`results`."""

    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.pool = ServerPool(options)
        self.results: dict[str, CaseResult] = {}
        self.errors: list[str] = []
        self.unmatched: list[str] = []
        self._current: CaseResult | None = None
        self._column = 0
        #: Members of the target's room that this run did not make, once seen (--target only).
        self.bystanders = ""

    # --- collection ----------------------------------------------------------------------

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.errors.append(f"cannot collect {report.nodeid}:\n{report.longreprtext}")

    def pytest_collection_modifyitems(
        self, session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        patterns = [p.upper() for p in self.options.selection]
        matched: set[str] = set()
        keep: list[pytest.Item] = []
        drop: list[pytest.Item] = []
        for item in items:
            case_id = _case_id(item)
            hits = [p for p in patterns if case_id and fnmatch.fnmatchcase(case_id, p)]
            matched.update(hits)
            (keep if case_id and (hits or not patterns) else drop).append(item)
        self.unmatched = [p for p in patterns if p not in matched]
        if drop:
            config.hook.pytest_deselected(items=drop)
        items[:] = keep

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """In a cluster run, a case about one process runs once against every node (§16.2)."""
        nodes = self.options.cluster_nodes
        case_id = getattr(metafunc.function, CASE_ATTRIBUTE, None)
        if not nodes or not isinstance(case_id, str) or "ctx" not in metafunc.fixturenames:
            return
        case = REGISTRY[case_id]
        if (case.process or case.per_node) and not case.cluster_only:
            metafunc.parametrize("ctx", range(nodes), indirect=True, ids=[f"node{i}" for i in range(nodes)])

    # --- fixtures ------------------------------------------------------------------------

    @pytest.fixture(scope="module", autouse=True)
    def _conformance_module_servers(self) -> Iterator[None]:
        yield
        self.pool.stop_shared()

    @pytest.fixture
    def ctx(self, request: pytest.FixtureRequest) -> Iterator[Context]:
        """The server under test, as the case's declaration asks for it."""
        case = _case_of(request.node)
        options = self.options
        reason = _skip_reason(case, options) or self._room_not_empty()
        if reason:
            pytest.skip(reason)
        transcript = Transcript(embed=False)
        server: ServerProcess | None = None
        cluster: Cluster | None = None
        spawner: Spawner | None = self.pool.start if options.template is not None else None
        node: int | None = getattr(request, "param", None)
        addresses: list[tuple[str, int]] = []
        if options.target is not None:
            address = options.target
        elif options.cluster_nodes:
            cluster, server, spawner = self._cluster_for(case, node)
            address = server.address if server is not None else ("", 0)
            addresses = [address] if node is not None else cluster.addresses
        elif case.spawns:
            address = ("", 0)
        else:
            deployed = (
                self.pool.start(case.settings) if case.own_server else self.pool.shared_server(case.settings)
            )
            assert isinstance(deployed, ServerProcess)
            server = deployed
            address = server.address
        context = Context(
            case,
            address=address,
            codec_name=options.codec,
            server=server,
            spawner=spawner,
            template=options.template if cluster is None else cluster.template_of(node or 0),
            timeout_scale=options.timeout_scale,
            transcript=transcript,
            security=options.security,
            addresses=addresses,
            cluster=cluster,
        )
        if cluster is not None:
            where = f"node {node} of the cluster" if node is not None else "the cluster's nodes in turn"
            transcript.note(f"connections go to {where}: {', '.join(map(str, context.addresses))}")
        request.node.stash[CONTEXT] = context
        try:
            yield context
        finally:
            self._clean_up(context, shared=options.target is not None or not case.own_server)

    def _cluster_for(
        self, case: Case, node: int | None
    ) -> tuple[Cluster, ServerProcess | None, Spawner | None]:
        """The cluster a case runs against, the node it is pinned to (if any), and its spawner.

        A case that starts its own servers gets Redis alone and starts nodes of node ``node``'s
        command; a case about one process gets a cluster of its own, pinned to node ``node``.
        """
        if case.spawns:
            cluster = self.pool.cluster(case.settings, nodes=0)
            return cluster, None, self.pool.node_spawner(cluster, node or 0)
        deployed = self.pool.own(case.settings) if case.own_server else self.pool.shared_server(case.settings)
        assert isinstance(deployed, Cluster)
        server = deployed.nodes[node or 0]
        return deployed, server, self.pool.node_spawner(deployed, node or 0)

    def _room_not_empty(self) -> str:
        """Against ``--target``: why cases cannot run there, if someone else is in the room.

        Cases count members and expect to see only what they caused, and one of them joins
        over a thousand clients: against a room with people in it they would fail and flood
        those people. So before each case a probe joins and asks for the roster; the first
        member this run did not make stops the run (every later case is skipped).
        """
        options = self.options
        if options.target is None:
            return ""
        if not self.bystanders:
            try:
                with WirePeer(
                    options.target,
                    codec=get_codec(options.codec),
                    label="room-check",
                    transcript=Transcript(embed=False),
                    timeout=5.0 * options.timeout_scale,
                    security=options.security,
                ) as probe:
                    name = probe.join(f"room-check{id(self) % 10000}-{len(self.results)}").name
                    probe.send(Who())
                    roster = probe.expect(Roster)
                    others = [f"{m.name}@{m.host}" for m in roster.members if m.name != name]
                    probe.half_close()
                    probe.wait_closed()
            except (AssertionError, OSError) as exc:
                return f"cannot check that the target's room is empty: {exc}".splitlines()[0]
            if others:
                shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
                self.bystanders = (
                    f"the target's room is not empty ({len(others)} member(s) this run did not make: "
                    f"{shown}); cases count members and would flood them, so they need a room of "
                    "their own"
                )
                self.errors.append(f"{self.bystanders}: the remaining cases were skipped")
        return self.bystanders

    def _clean_up(self, context: Context, shared: bool) -> None:
        """Close the case's peers and, on a shared server, make sure none is still a member.

        The next case must find an empty room, or its counts would be off: every peer
        half-closes and waits for the server's close, which comes after its departure
        (§8.7); then a janitor checks the roster and waits for stragglers to leave.
        """
        if not shared:
            # The case's own server: signal it first, so that closing many peers costs it no departures.
            server: ServerProcess | Cluster | None = context.cluster or context.server
            if server is not None:
                server.signal(signal.SIGTERM)
            context.close_all()
            if server is not None:
                server.stop()
            return
        clean = True
        open_peers = [peer for peer in context.peers if not peer.closed]
        for peer in open_peers:
            peer.half_close()
        for peer in open_peers:
            try:
                peer.wait_closed(2.0 * context.scale)
            except (AssertionError, OSError):
                clean = False
        if context.peers and clean:
            clean = self._janitor(context)
        context.close_all()
        if self.options.target is None and not clean:
            self.pool.dirty.add(context.case.settings)
            context.transcript.note("the server was left in an unclean state; it is restarted")

    def _janitor(self, context: Context) -> bool:
        try:
            with WirePeer(
                context.address,
                codec=context.codec,
                label="janitor",
                transcript=Transcript(embed=False),
                security=context.security,
            ) as janitor:
                name = janitor.join(context.name("janitor")).name
                janitor.send(Who())
                roster = janitor.expect(Roster)
                others = {m.name for m in roster.members if m.name != name}
                while others:
                    gone = janitor.expect(Left, 2.0 * context.scale)
                    others.discard(gone.name)
                janitor.half_close()
                janitor.wait_closed(2.0 * context.scale)
        except (AssertionError, OSError):
            return False
        return True

    # --- running and reporting -----------------------------------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, object, object]:
        budget = self.options.case_budget * self.options.timeout_scale
        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, budget)
        try:
            return (yield)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        case = _case_of(item)
        result = self._current = self.results.setdefault(case.id, CaseResult(case))
        result.duration += report.duration
        context = item.stash.get(CONTEXT, None)
        if report.skipped and result.outcome != "fail":
            # A case can also skip itself once it has looked at the server (pytest.skip in its
            # body): that is a skip with its reason too, never a pass.
            result.outcome = "skip"
            result.message = _skip_text(report)
            return report
        problem = ""
        if report.failed and call.excinfo is not None:
            problem = _describe(call.excinfo)
            if call.when != "call":
                problem = f"{call.when}: {problem}"
        if call.when == "call" and context is not None:
            died = _server_death(context)
            if died:
                problem = f"{problem}\n{died}".strip()
                report.outcome = "failed"
                report.longrepr = problem
        callspec = getattr(item, "callspec", None)
        node = callspec.params.get("ctx") if callspec is not None else None
        if problem and isinstance(node, int):
            problem = f"against node {node} of the cluster: {problem}"
        if problem and case.settings and self.options.template is not None:
            problem += (
                f"\n(this server was started with {case.settings.describe()} appended to its command; "
                "a command that wraps the server must pass such flags on: bash -c 'exec server \"$@\"' x)"
            )
        if problem and result.outcome != "fail":
            failed_should = case.level is Level.SHOULD and not self.options.strict
            result.outcome = "warn" if failed_should else "fail"
            result.message = problem
            if context is not None:
                result.transcript = context.transcript.render()
                report.sections.append(("transcript", result.transcript))
        elif problem and isinstance(node, int):
            # The same case against another node of the cluster failed too: say so as well.
            result.message += f"\n{problem}"
        return report

    def pytest_runtest_logfinish(self, nodeid: str, location: tuple[str, int | None, str]) -> None:
        result = self._current
        if result is None:
            return
        out = self.options.out
        if self.options.verbose:
            out.write(f"  {result.outcome.upper():5} {result.case.id} ({result.duration:.2f} s)\n")
            if result.outcome in ("fail", "warn"):
                out.write(_indent(result.message) + "\n")
        else:
            mark = MARKS[result.outcome]
            if self._column == 0:
                out.write(f"  {self.options.label:24} ")
            out.write(mark)
            self._column += 1
            if self._column == 60:
                out.write("\n")
                self._column = 0
        out.flush()

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.pool.stop_shared()
        if self._column:
            self.options.out.write("\n")
            self._column = 0

    def pytest_internalerror(self, excrepr: object) -> None:
        self.errors.append(f"internal error: {excrepr}")


def _case_of(item: pytest.Item) -> Case:
    case_id = _case_id(item)
    if case_id is None:
        raise LookupError(f"{item.nodeid} is not a conformance case")
    return REGISTRY[case_id]


def _case_id(item: pytest.Item) -> str | None:
    case_id = getattr(getattr(item, "function", None), CASE_ATTRIBUTE, None)
    return case_id if isinstance(case_id, str) else None


def _server_death(context: Context) -> str:
    if context.cluster is not None:
        return "" if context.case.stops_server else context.cluster.deaths()
    server = context.server
    if server is None or server.alive() or context.case.stops_server:
        return ""
    status = server.returncode
    tail = server.stderr_tail()
    return f"the server died during the case (exit status {status})\n--- server stderr (tail) ---\n{tail}"


def _describe(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    text = excinfo.exconly().strip()
    where = ""
    for entry in reversed(excinfo.traceback):
        path = str(entry.path)
        if "/cases/" in path.replace("\\", "/"):
            where = f" [{path.rsplit('/', 1)[-1]}:{entry.lineno + 1}]"
            break
    if isinstance(excinfo.value, ServerFailed):
        text = f"the server could not be started: {excinfo.value}"
    return f"{text}{where}"


def _skip_text(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _indent(text: str, prefix: str = "        ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())
