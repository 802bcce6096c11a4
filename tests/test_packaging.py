"""The distribution as a user gets it: a wheel built from this checkout, installed outside it.

The wheel must hold exactly the project's import packages, the packaged vectors must be the
spec's, and the installed suite must find its vectors and judge the installed servers from a
directory that has nothing of the checkout in it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance.spec_vectors import VECTOR_FILES, vectors_directory

ROOT = Path(__file__).resolve().parent.parent
INSTALLED_PACKAGES = {"protocol", "impl_select", "impl_asyncio", "conformance", "chatwire_client"}
SCRIPTS = ("chatwire", "chatwire-select", "chatwire-asyncio", "chatwire-conformance")


def test_the_packaged_vectors_are_the_spec_vectors_byte_for_byte() -> None:
    source = ROOT / "spec" / "vectors"
    assert sorted(p.name for p in source.glob("*.json")) == sorted(VECTOR_FILES)
    packaged = vectors_directory()
    assert sorted(f.name for f in packaged.iterdir() if f.name.endswith(".json")) == sorted(VECTOR_FILES)
    for name in VECTOR_FILES:
        assert (packaged / name).read_bytes() == (source / name).read_bytes(), (
            f"conformance/vectors/{name} differs from spec/vectors/{name}: run tools/make_vectors.py"
        )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The wheel, and what the build printed (verbose: pip shows the backend's output)."""
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy, so that the build leaves nothing (build/, *.egg-info) in the checkout.
    source = tmp_path_factory.mktemp("source") / "chatwire"
    junk = (".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "reports")
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*junk))
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "-w", out, source],
        check=True,
        capture_output=True,
        text=True,
        cwd=out,
    )
    (wheel,) = out.glob("chatwire-*.whl")
    return wheel, build.stdout + build.stderr


@pytest.fixture(scope="module")
def wheel(built: tuple[Path, str]) -> Path:
    return built[0]


def test_the_build_warns_about_nothing(built: tuple[Path, str]) -> None:
    # setuptools prints its deprecations and configuration doubts as named Warning subclasses
    # (BuildBackendWarning: `project.license` as a TOML table is deprecated; ... Package
    # 'conformance.vectors' is absent from the `packages` configuration; ...).
    _, output = built
    warnings = sorted({match.group() for match in re.finditer(r"\b\w*Warning\b: [^\n]*", output)})
    assert not warnings, "\n".join(warnings)


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """The wheel installed into a directory of its own, and an environment that imports from it first."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", target, wheel],
        check=True,
        capture_output=True,
    )
    env = {**os.environ, "PYTHONPATH": str(target), "PYTHONSAFEPATH": "1"}
    yield target, env


def test_the_wheel_holds_exactly_the_project_packages(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    top = {name.split("/")[0] for name in names}
    assert {t for t in top if not t.endswith(".dist-info")} == INSTALLED_PACKAGES
    # Every module of the checkout's packages, subpackages included: a subpackage missing from
    # pyproject.toml would still import in tests through the editable install.
    modules = {
        path.relative_to(ROOT).as_posix()
        for package in INSTALLED_PACKAGES
        for path in (ROOT / package).rglob("*.py")
    }
    assert modules - set(names) == set()
    assert "protocol/py.typed" in names
    for vector in VECTOR_FILES:
        assert f"conformance/vectors/{vector}" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    with zipfile.ZipFile(wheel) as archive:
        scripts = archive.read(entry_points).decode()
    for script in SCRIPTS:
        assert f"{script} = " in scripts


def _run(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], check=False, env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_installed_packages_import_from_the_install_not_the_checkout(
    installed: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    target, env = installed
    code = "import protocol, conformance, chatwire_client; print(protocol.__file__, protocol.__version__)"
    result = _run(env, tmp_path, "-c", code)
    assert result.returncode == 0, result.stderr
    where, version = result.stdout.split()
    assert Path(where).is_relative_to(target)
    assert (
        version
        == subprocess.run(
            [sys.executable, "-c", "import protocol; print(protocol.__version__)"],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        ).stdout.strip()
    )


def test_the_installed_suite_runs_its_vector_cases_against_the_installed_servers(
    installed: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    _, env = installed
    listing = _run(env, tmp_path, "-m", "conformance", "--list")
    assert listing.returncode == 0, listing.stderr
    assert "VEC-INVALID" in listing.stdout
    report = tmp_path / "report.json"
    result = _run(env, tmp_path, "-m", "conformance", "--case", "VEC-*", "--json", str(report))
    assert result.returncode == 0, result.stdout + result.stderr
    runs = json.loads(report.read_text(encoding="utf-8"))
    assert {(run["implementation"], run["codec"]) for run in runs} == {
        (impl, codec) for impl in ("impl_select", "impl_asyncio") for codec in ("msgpack", "pickle")
    }
    for run in runs:
        outcomes = {case["id"]: case["outcome"] for case in run["cases"] if case["id"].startswith("VEC-")}
        assert outcomes and set(outcomes.values()) == {"pass"}, outcomes


@pytest.mark.parametrize("script", ["chatwire-select", "chatwire-asyncio"])
def test_the_server_scripts_serve_the_client_script_and_stop_on_sigterm(
    installed: tuple[Path, dict[str, str]], tmp_path: Path, script: str
) -> None:
    target, env = installed
    server = subprocess.Popen(
        [target / "bin" / script, "--port", "0"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line.startswith("listening on 127.0.0.1:"), line
        port = line.rsplit(":", 1)[1].strip()
        client = subprocess.run(
            [target / "bin" / "chatwire", "--port", port, "--name", "installed"],
            input="hello from the wheel\n",
            check=False,
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert client.returncode == 0, client.stderr
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=10) == 0
    finally:
        server.kill()
        server.communicate()


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("chatwire", "--name"),
        ("chatwire-conformance", "--server-cmd"),
        ("chatwire-select", "usage: chatwire-select"),
        ("chatwire-asyncio", "usage: chatwire-asyncio"),
    ],
)
def test_the_scripts_answer_help_under_their_own_names(
    installed: tuple[Path, dict[str, str]], tmp_path: Path, script: str, expected: str
) -> None:
    target, env = installed
    result = subprocess.run(
        [target / "bin" / script, "--help"],
        check=False,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout


def test_the_readme_shows_every_console_script_and_links_only_existing_files() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    with (ROOT / "pyproject.toml").open("rb") as file:
        scripts = tomllib.load(file)["project"]["scripts"]
    assert set(scripts) == set(SCRIPTS)
    for script, entry in scripts.items():
        module = entry.split(":")[0].removesuffix(".__main__").removesuffix(".runner")
        assert f"`{script}` is `python -m {module}`" in readme, script
    for target in re.findall(r"\]\(([^)#]+)", readme):
        assert (ROOT / target).exists(), f"README.md links to {target}, which does not exist"
    for document in ("BENCHMARKS.md", "TESTING.md", "SECURITY.md"):
        assert f"]({document})" in readme
