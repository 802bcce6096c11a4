"""The protocol package does no I/O: nothing in it imports a networking or event-loop module."""

from __future__ import annotations

import ast
from pathlib import Path

import protocol

FORBIDDEN = {"socket", "selectors", "select", "asyncio", "ssl", "socketserver", "uvloop", "threading"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_protocol_package_imports_no_io_module() -> None:
    package = Path(protocol.__file__).parent
    files = sorted(package.rglob("*.py"))  # subpackages (protocol.server) included
    assert len(files) >= 8
    assert package / "server" / "core.py" in files
    offenders = {str(f.relative_to(package)): sorted(imported_modules(f) & FORBIDDEN) for f in files}
    assert {name: mods for name, mods in offenders.items() if mods} == {}


def test_the_checker_sees_imports() -> None:
    sample = Path(__file__)
    assert "ast" in imported_modules(sample)
