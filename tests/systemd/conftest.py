"""Fixtures of the real-systemd tier (see nspawn.py).

Every test under tests/systemd is marked ``systemd``.  When this host cannot
boot containers (not root, no systemd-nspawn, no root and no debootstrap or
network, nspawn fails) the tests skip with the reason, or fail when
``OLLAMA_OPS_REQUIRE_SYSTEMD=1`` (CI sets it, so the tier never vanishes
silently).

Fixtures:

* ``container``: a freshly booted container per test, parametrised over
  bookworm, trixie and bullseye (narrow it with
  ``@pytest.mark.parametrize("container", ["bookworm"], indirect=True)``).
* ``container_factory``: ``boot(suite="bookworm") -> Container``, each
  container stopped and removed after the test.
* ``module_container_factory``: the same, shared by a module's tests.

When a test fails, the journal tail and the failed units of its containers
are printed into the report.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import NoReturn

import pytest

from .nspawn import SUITES, Container, Unavailable, check_host, ensure_root

REQUIRE_ENV = "OLLAMA_OPS_REQUIRE_SYSTEMD"
HERE = Path(__file__).parent
SUITE_NAMES = ("bookworm", "trixie", "bullseye")

BootFactory = Callable[..., Container]

_failed_key = pytest.StashKey[bool]()
_unavailable: dict[str, str] = {}
_builds: dict[str, Future[Path]] = {}


def unavailable(reason: str) -> NoReturn:
    """Skip, or fail when OLLAMA_OPS_REQUIRE_SYSTEMD=1."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"systemd tier unavailable: {reason} ({REQUIRE_ENV}=1)", pytrace=False)
    pytest.skip(f"systemd tier unavailable: {reason}")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.systemd)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for node in item.listchain():  # the module too, for module-scoped containers
            node.stash[_failed_key] = True
    return report


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    """A prerequisite found missing inside a test (e.g. no wheels): skip or fail as above."""
    try:
        return (yield)
    except Unavailable as exc:
        if HERE not in pyfuncitem.path.parents:
            raise
        unavailable(str(exc))


def _build(suite: str) -> Future[Path]:
    """ensure_root(suite) in a background thread, started once per session."""
    if suite not in _builds:
        future: Future[Path] = Future()

        def work() -> None:
            try:
                future.set_result(ensure_root(suite))
            except BaseException as exc:
                future.set_exception(exc)

        threading.Thread(target=work, name=f"ensure-root-{suite}", daemon=True).start()
        _builds[suite] = future
    return _builds[suite]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start building the missing roots of the selected tests' suites in parallel.

    On an empty cache the three debootstraps take ~110 s together instead
    of ~150 s one after the other (2 cores).
    """
    nodeids = [item.nodeid for item in session.items if HERE in item.path.parents]
    wanted = [suite for suite in SUITE_NAMES if any(f"[{suite}" in n for n in nodeids)]
    try:
        check_host()
    except Unavailable:
        return
    for suite in wanted:
        _build(suite)


def _prepare(suite: str) -> None:
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; use one of {', '.join(SUITES)}")
    if suite not in _unavailable:
        try:
            check_host()
            _build(suite).result()
            _unavailable[suite] = ""
        except Unavailable as exc:
            _unavailable[suite] = str(exc)
    if _unavailable[suite]:
        unavailable(_unavailable[suite])


def _dump(container: Container) -> None:
    if not container.running:
        print(f"=== {container.name}: not running; nspawn log tail:")
        print("\n".join(container.nspawn_log().splitlines()[-40:]))
        return
    failed = container.exec(["systemctl", "--failed", "--no-legend", "--plain"], check=False)
    print(f"=== {container.name} ({container.suite}) failed units:\n{failed.stdout}")
    print(f"=== {container.name} journal tail:\n{container.journal(lines=120)}")


def _factory(request: pytest.FixtureRequest) -> Iterator[BootFactory]:
    booted: list[Container] = []

    def boot(suite: str = "bookworm") -> Container:
        _prepare(suite)
        container = Container(suite)
        try:
            container.start()
        except Unavailable as exc:
            unavailable(str(exc))
        booted.append(container)
        return container

    try:
        yield boot
    finally:
        failed = request.node.stash.get(_failed_key, False)
        for container in booted:
            try:
                if failed:
                    _dump(container)
            finally:
                container.stop()


@pytest.fixture
def container_factory(request: pytest.FixtureRequest) -> Iterator[BootFactory]:
    yield from _factory(request)


@pytest.fixture(scope="module")
def module_container_factory(request: pytest.FixtureRequest) -> Iterator[BootFactory]:
    yield from _factory(request)


@pytest.fixture(params=SUITE_NAMES)
def container(container_factory: BootFactory, request: pytest.FixtureRequest) -> Container:
    suite: str = request.param
    return container_factory(suite)
