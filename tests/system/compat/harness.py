"""Run another project's own test suite through the adapter and compare with a baseline.

The suite comes from the sdist of the version installed here (so it tests what we
run against); it runs in a venv of its own (``.venv/compat``: its test dependencies,
such as httpbin's pinned greenlet, would clash with ours), once per mode of
:mod:`resilience_compat_plugin`, and each run's JUnit XML gives the set of tests
that failed. Usable alone::

    .venv/bin/python -m tests.system.compat.harness requests one
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import re
import subprocess
import sys
import tarfile
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
VENV = ROOT / ".venv" / "compat"
#: runs of several modes go in parallel; making the venv and unpacking do not
_SETUP = threading.Lock()


@dataclass(frozen=True)
class Suite:
    """Another project's test suite."""

    #: the distribution whose sdist holds the tests (its installed version is used)
    dist: str
    #: what its tests need besides the distribution itself
    test_deps: tuple[str, ...]
    #: test dependencies installed without their own (whose pins would move ours)
    no_deps: tuple[str, ...] = ()
    #: test paths inside the sdist
    paths: tuple[str, ...] = ("tests",)
    #: node ids deselected, each with the reason (e.g. it connects outside loopback)
    deselect: dict[str, str] = field(default_factory=dict)
    pytest_args: tuple[str, ...] = ()


REQUESTS = Suite(
    dist="requests",
    test_deps=("pytest-httpbin==2.1.0", "httpbin~=0.10.0", "pytest-mock", "trustme", "PySocks"),
    deselect={
        # connect-timeout tests aimed at 10.255.255.1 (outside loopback); a prefix of the
        # parametrised ids
        "tests/test_requests.py::TestTimeout::test_connect_timeout": "connects to 10.255.255.1",
        "tests/test_requests.py::TestTimeout::test_total_timeout_connect": "connects to 10.255.255.1",
        # a DNS lookup of a public name
        "tests/test_requests.py::TestRequests::test_errors[http://doesnotexist.google.com-ConnectionError]": (
            "looks up a public name"
        ),
    },
    pytest_args=("-p", "no:cacheprovider", "-o", "addopts="),
)

OTLP_HTTP = Suite(
    dist="opentelemetry-exporter-otlp-proto-http",
    test_deps=("mocket", "pytest-mock", "asgiref"),
    # the test utilities pin the SDK's previous patch release; they work with this one
    no_deps=("opentelemetry-test-utils",),
    pytest_args=("-p", "no:cacheprovider"),
)

FLASK = Suite(
    dist="flask",
    test_deps=("asgiref", "greenlet", "python-dotenv"),
    pytest_args=("-p", "no:cacheprovider", "-o", "addopts="),
)

#: the OpenTelemetry SDK's tests (tests/system/compat/test_otlp_sdk_contract.py imports
#: some of them and runs them here, with the durable exporters in place of theirs)
OTEL_SDK = Suite(dist="opentelemetry-sdk", test_deps=())

SUITES = {"requests": REQUESTS, "otlp-http": OTLP_HTTP, "flask": FLASK}


def _run(*cmd: str | Path, cwd: Path | None = None) -> None:
    subprocess.run([str(c) for c in cmd], cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def venv() -> Path:
    """The compat venv with every suite's test dependencies and this project, made once
    per set of requirements."""
    pins = sorted(
        {f"{s.dist}=={metadata.version(s.dist)}" for s in SUITES.values()}
        | {d for s in SUITES.values() for d in (*s.test_deps, *s.no_deps)}
        # pytest 9 removed _pytest.monkeypatch.notset, which Flask 3.1's test_cli imports
        | {"pytest<9", "opentelemetry-sdk=={}".format(metadata.version("opentelemetry-sdk"))}
    )
    stamp = VENV / f".ok-{hashlib.sha1('|'.join(pins).encode()).hexdigest()[:12]}"
    python = VENV / "bin" / "python"
    if not stamp.exists():
        if not python.exists():
            _run(sys.executable, "-m", "venv", VENV)
        _run(python, "-m", "pip", "install", "-q", "--upgrade", "pip")
        _run(python, "-m", "pip", "install", "-q", *pins)
        no_deps = sorted({d for s in SUITES.values() for d in s.no_deps})
        if no_deps:
            _run(python, "-m", "pip", "install", "-q", "--upgrade", "--no-deps", *no_deps)
        _run(python, "-m", "pip", "install", "-q", "-e", ROOT)
        for old in VENV.glob(".ok-*"):
            old.unlink()
        stamp.touch()
    return python


def sources(suite: Suite) -> Path:
    """The unpacked sdist of the installed version of ``suite.dist``."""
    version = metadata.version(suite.dist)
    target = VENV / "src" / f"{suite.dist}-{version}"
    if not (target / ".ok").exists():
        download = VENV / "sdists"
        download.mkdir(parents=True, exist_ok=True)
        # (pip of this interpreter when it has one: a suite run here needs no compat venv)
        python = Path(sys.executable) if importlib.util.find_spec("pip") else venv()
        _run(
            python, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
            "-d", download, f"{suite.dist}=={version}",
        )
        archive = next(p for p in download.iterdir() if p.name.lower().replace("_", "-").startswith(f"{suite.dist}-{version}"))
        with tarfile.open(archive) as tar:
            top = VENV / "src" / tar.getnames()[0].split("/")[0]
            try:
                tar.extractall(VENV / "src", filter="data")
            except TypeError:  # a Python without extraction filters (the archive is PyPI's)
                tar.extractall(VENV / "src")
        if top != target:
            top.rename(target)
        (target / ".ok").touch()
    return target


@dataclass(frozen=True)
class Result:
    passed: frozenset[str]
    failed: frozenset[str]
    skipped: frozenset[str]
    #: requests that went through a FailoverAdapter (0 in plain mode)
    sent: int = 0
    #: ``extension`` mode: apps that got the extension, library threads alive at the
    #: end of the suite and after the dropped apps were collected
    apps: int = 0
    threads_at_end: int = -1
    threads_after_collection: int = -1
    #: apps with the extension still referenced after the collection (module-level apps)
    apps_alive: int = -1


def run(suite: Suite, mode: str, timeout: float = 900) -> Result:
    """Run ``suite`` in ``mode``; the ids of its tests by outcome."""
    with _SETUP:
        python = venv()
        src = sources(suite)
    report = VENV / f"junit-{suite.dist}-{mode}.xml"
    cmd = [
        str(python), "-m", "pytest", *suite.paths, "-q", "-p", "resilience_compat_plugin",
        f"--junitxml={report}", *suite.pytest_args,
    ]
    for node_id in suite.deselect:
        cmd += ["--deselect", node_id]
    env = {"RESILIENCE_COMPAT_MODE": mode, "PYTHONPATH": str(Path(__file__).parent), "PATH": "/usr/bin:/bin", "HOME": str(VENV)}
    report.unlink(missing_ok=True)
    done = subprocess.run(cmd, cwd=src, env=env, timeout=timeout, capture_output=True, text=True, check=False)
    if not report.exists():
        raise RuntimeError(f"{suite.dist} [{mode}] wrote no report:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    found = re.search(r"resilience_mw compat: (\d+) requests sent", done.stdout)
    result = dataclasses.replace(parse(report), sent=int(found[1]) if found else 0)
    threads = re.search(
        r"(\d+) apps with the extension; library threads at the end (\d+), after collection (\d+); apps alive (\d+)",
        done.stdout,
    )
    if threads:
        apps, at_end, after, alive = (int(g) for g in threads.groups())
        result = dataclasses.replace(
            result, apps=apps, threads_at_end=at_end, threads_after_collection=after, apps_alive=alive
        )
    return result


def parse(report: Path) -> Result:
    passed: set[str] = set()
    failed: set[str] = set()
    skipped: set[str] = set()
    for case in ET.parse(report).iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            failed.add(name)
        elif case.find("skipped") is not None:
            skipped.add(name)
        else:
            passed.add(name)
    return Result(frozenset(passed), frozenset(failed), frozenset(skipped))


def main() -> None:
    suite, mode = SUITES[sys.argv[1]], sys.argv[2]
    result = run(suite, mode)
    print(
        f"{suite.dist} [{mode}]: {len(result.passed)} passed, {len(result.failed)} failed, "
        f"{len(result.skipped)} skipped; {result.sent} requests through FailoverAdapter"
    )
    if result.apps:
        print(
            f"  {result.apps} apps with the extension; library threads at the end {result.threads_at_end}, "
            f"after collection {result.threads_after_collection}; apps alive {result.apps_alive}"
        )
    for name in sorted(result.failed):
        print("  FAILED", name)


if __name__ == "__main__":
    main()
