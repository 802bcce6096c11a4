"""The case registry: every conformance case with its stable id, spec section and level.

A case is a pytest test function inside :mod:`conformance.cases`, declared with
:func:`case`, which registers it here and tags it with its id for the runner's plugin::

    @case("FRAME-LEN-MAX", "3.2", MUST, "A frame of exactly max_frame octets is accepted")
    def test_frame_len_max(ctx: Context) -> None: ...

Ids never change meaning once published; a case that changes what it checks gets a new id.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from . import cases

F = TypeVar("F", bound=Callable[..., Any])

_ID = re.compile(r"^[A-Z][A-Z0-9]*(-[A-Z0-9]+)+$")
_SECTION = re.compile(r"^\d+(\.\d+)*$")


class Level(StrEnum):
    """Requirement level of the rule a case checks (§16): a failed SHOULD case is a warning."""

    MUST = "MUST"
    SHOULD = "SHOULD"


MUST = Level.MUST
SHOULD = Level.SHOULD


@dataclass(frozen=True, slots=True)
class Settings:
    """Server settings a case needs, passed as command-line flags to a server the runner starts.

    These are the flags a server under test must accept for such cases to run (spec §16.1):
    ``--hello-timeout SECONDS``, ``--max-output-buffer BYTES``, ``--max-frame BYTES``, and
    the bounds of §7.5, §10.1, §10.2 and §14.2, each named as its field with dashes.
    Against an already running server (``--target``) such cases are skipped.
    """

    hello_timeout: float | None = None
    max_output_buffer: int | None = None
    max_frame: int | None = None
    frame_timeout: float | None = None
    idle_timeout: float | None = None
    output_soft_limit: int | None = None
    slow_consumer_timeout: float | None = None
    hold_patience: float | None = None
    max_total_output: int | None = None
    max_total_input: int | None = None

    def args(self) -> list[str]:
        flags = []
        for name in self.__slots__:
            value = getattr(self, name)
            if value is not None:
                text = f"{value:g}" if isinstance(value, float) else str(value)
                flags += ["--" + name.replace("_", "-"), text]
        return flags

    def __bool__(self) -> bool:
        return bool(self.args())

    def describe(self) -> str:
        return " ".join(self.args()) or "default settings"


@dataclass(frozen=True, slots=True)
class Case:
    """One conformance case.

    ``isolated``: wants a server of its own when the runner starts servers (it loads or
    stops the server); against ``--target`` it runs on the shared target.
    ``process``: needs the server process itself (signals, restarts, memory, stderr, how
    it is started); skipped against ``--target``.
    ``codecs``: the codecs the case applies to (skipped for the others).
    ``stops_server``: the case ends the server process itself, so its exit is no failure.
    ``spawns``: the case starts the servers it needs itself (``ctx.spawn``); implies ``process``.
    ``needs``: what the run must have been told the server offers (§16.1 rule 5): ``"tls"``,
    ``"auth"`` (a token), ``"reserved"`` (a reserved name); not applicable otherwise.
    ``cluster_only``: the case is about a room served by several nodes (§18) and runs only
    against a cluster (``--cluster-nodes``); elsewhere it is reported not applicable.
    ``per_node``: the case is about what one node decides for the connections it serves alone
    (§14.2's totals, §18.2): in a cluster run it runs once against
    every node with all its connections there, as a ``process`` case does (§16.2 rule 3).
    """

    id: str
    section: str
    level: Level
    title: str
    also: tuple[str, ...] = ()
    settings: Settings = field(default_factory=Settings)
    isolated: bool = False
    process: bool = False
    codecs: tuple[str, ...] = ("msgpack", "pickle")
    stops_server: bool = False
    spawns: bool = False
    needs: tuple[str, ...] = ()
    cluster_only: bool = False
    per_node: bool = False
    module: str = ""
    function: str = ""

    @property
    def sections(self) -> tuple[str, ...]:
        """Every section the case cites, its own first."""
        return (self.section, *self.also)

    @property
    def own_server(self) -> bool:
        return self.isolated or self.process

    def section_key(self) -> tuple[int, ...]:
        return tuple(int(part) for part in self.section.split("."))


REGISTRY: dict[str, Case] = {}
#: The attribute :func:`case` sets on a case function: its id.
CASE_ATTRIBUTE = "conformance_case_id"


def case(
    case_id: str,
    section: str,
    level: Level,
    title: str,
    *,
    also: tuple[str, ...] = (),
    settings: Settings | None = None,
    isolated: bool = False,
    process: bool = False,
    codecs: tuple[str, ...] = ("msgpack", "pickle"),
    stops_server: bool = False,
    spawns: bool = False,
    needs: tuple[str, ...] = (),
    cluster_only: bool = False,
    per_node: bool = False,
) -> Callable[[F], F]:
    """Declare a conformance case (see the module docstring)."""
    if not _ID.match(case_id):
        raise ValueError(f"case id {case_id!r} must look like AREA-WHAT (upper case, dashes)")
    for cited in (section, *also):
        if not _SECTION.match(cited):
            raise ValueError(f"{case_id}: section {cited!r} must look like 3.2 or 12")

    def register(function: F) -> F:
        declared = Case(
            id=case_id,
            section=section,
            level=level,
            title=title,
            also=also,
            settings=settings or Settings(),
            isolated=isolated,
            process=process or spawns,
            codecs=codecs,
            stops_server=stops_server,
            spawns=spawns,
            needs=needs,
            cluster_only=cluster_only,
            per_node=per_node,
            module=function.__module__,
            function=function.__name__,
        )
        known = REGISTRY.get(case_id)
        if known is not None and (known.module, known.function) != (declared.module, declared.function):
            raise ValueError(f"case id {case_id} is declared twice: {known.function} and {function.__name__}")
        REGISTRY[case_id] = declared
        setattr(function, CASE_ATTRIBUTE, case_id)
        return function

    return register


def load_cases() -> Mapping[str, Case]:
    """Import every case module and return the registry, in declaration order."""
    for module in pkgutil.iter_modules(cases.__path__):
        if module.name.startswith("test_"):
            importlib.import_module(f"{cases.__name__}.{module.name}")
    return REGISTRY


def ordered(registry: Mapping[str, Case]) -> list[Case]:
    """Cases by spec section, then id: the order of the matrix rows."""
    return sorted(registry.values(), key=lambda c: (c.section_key(), c.id))
