"""Boot a real systemd in systemd-nspawn for the tests.

The pieces, from the bottom up:

* :func:`ensure_root` keeps one pristine Debian root per suite (bookworm =
  systemd 252, trixie = 257, bullseye = 247) under :func:`roots_dir`, built
  once with debootstrap into a temporary directory and renamed into place, so
  a half-built root is never used.  A file lock keeps parallel runs apart.
* :class:`Container` boots a throwaway view of a pristine root (an overlayfs
  whose upper layer is thrown away, or a ``cp -a --reflink=auto`` copy where
  overlayfs is not available) with ``systemd-nspawn -b --private-network``
  and runs commands inside with ``nsenter``.  The container has its own
  loopback: a service listening on 127.0.0.1 inside it is reachable only from
  inside, through :meth:`Container.exec`, :meth:`Container.http` or
  :meth:`Container.netns_exec` (host programs in the container's network).
* :func:`install_ollama_ops`, :func:`install_simulator_as_ollama`,
  :func:`create_ollama_user` and :func:`write_installer_unit` set a container
  up the way an operator's host looks after Ollama's official installer.

Prerequisites that are missing raise :class:`Unavailable`; the fixtures in
``conftest.py`` turn that into a skip, or a failure under
``OLLAMA_OPS_REQUIRE_SYSTEMD=1``.

Environment:

* ``OLLAMA_OPS_ROOTS``: cache directory (default /var/cache/ollama-ops-roots)
  for the roots, the wheels, the installed libraries and the running
  containers' layers.
* ``OLLAMA_OPS_MIRROR``: Debian mirror for debootstrap
  (default http://deb.debian.org/debian).
* ``OLLAMA_OPS_ROOT_MODE``: ``overlay`` (default, falls back to copy when the
  mount fails) or ``copy``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import ClassVar

from packaging.markers import Marker
from packaging.requirements import Requirement

from ollama_ops.host.systemd import parse_show
from ollama_ops.render.ansible.wheelhouse import closure_for

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
SRC_PACKAGE = REPO / "src" / "ollama_ops"

DEFAULT_ROOTS = "/var/cache/ollama-ops-roots"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEBOOTSTRAP_INCLUDE = "systemd,systemd-sysv,dbus,python3"
DEBOOTSTRAP_TIMEOUT = 1200.0
BOOT_TIMEOUT = 90.0

# Inside the container: where the package and its dependencies go.
LIB_DIR = "/opt/ollama-ops/lib"
OLLAMA_OPS_BIN = "/usr/local/bin/ollama-ops"
OLLAMA_BIN = "/usr/local/bin/ollama"
OLLAMA_UNIT = "/etc/systemd/system/ollama.service"
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Suite:
    """A Debian release and what it ships."""

    name: str
    debian: int
    systemd: int
    python: str  # major.minor of /usr/bin/python3
    glibc: tuple[int, int]

    @property
    def runs_ollama_ops(self) -> bool:
        """Whether the main package (Python 3.10+) runs here; else only the simulator."""
        major, minor = (int(p) for p in self.python.split("."))
        return (major, minor) >= (3, 10)


SUITES: dict[str, Suite] = {
    "bullseye": Suite("bullseye", 11, 247, "3.9", (2, 31)),
    "bookworm": Suite("bookworm", 12, 252, "3.11", (2, 36)),
    "trixie": Suite("trixie", 13, 257, "3.13", (2, 41)),
}


class Unavailable(Exception):
    """A prerequisite of the systemd tier is missing on this host."""


class ContainerError(AssertionError):
    """A command inside a container failed, or the container misbehaved."""


class BootError(Unavailable):
    """systemd-nspawn could not boot the container here."""


# ---------------------------------------------------------------- host checks


def roots_dir() -> Path:
    return Path(os.environ.get("OLLAMA_OPS_ROOTS", DEFAULT_ROOTS))


def mirror() -> str:
    return os.environ.get("OLLAMA_OPS_MIRROR", DEFAULT_MIRROR)


def check_host() -> None:
    """Raise Unavailable naming the first missing prerequisite for booting containers."""
    if os.geteuid() != 0:
        raise Unavailable("needs root to boot systemd-nspawn containers (running as non-root)")
    for tool, package in (("systemd-nspawn", "systemd-container"), ("nsenter", "util-linux")):
        if shutil.which(tool) is None:
            raise Unavailable(f"{tool} not found: apt-get install {package}")
    if not Path("/sys/fs/cgroup").is_dir():
        raise Unavailable("no /sys/fs/cgroup: systemd-nspawn cannot boot here")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _tail(text: str, lines: int = 1) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(kept[-lines:]) or "no output"


# ---------------------------------------------------------------- roots


def _dpkg_installed(root: Path, packages: Sequence[str]) -> bool:
    try:
        status = (root / "var/lib/dpkg/status").read_text(errors="replace")
    except OSError:
        return False
    found = set()
    for stanza in status.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " "
        )
        if fields.get("Status") == "install ok installed":
            found.add(fields.get("Package", ""))
    return all(p in found for p in packages)


def root_complete(root: Path) -> bool:
    """Whether ``root`` is a finished debootstrap with what the tests need."""
    return (
        (root / "usr/bin/python3").exists()
        and (root / "usr/lib/systemd/systemd").exists()
        and (root / "sbin/init").is_symlink()
        and _dpkg_installed(root, ("systemd", "systemd-sysv", "dbus", "python3"))
    )


def ensure_root(suite: str) -> Path:
    """The cached pristine root of ``suite``, built with debootstrap when missing.

    Never boot or modify the returned directory: use :class:`Container`.
    """
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; use one of {', '.join(SUITES)}")
    base = roots_dir()
    final = base / suite
    if root_complete(final):
        return final
    with _locked(base / f".{suite}.lock"):
        if root_complete(final):
            return final
        for stale in base.glob(f".{suite}.build-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():
            aside = base / f".{suite}.build-incomplete-{secrets.token_hex(4)}"
            final.rename(aside)
            shutil.rmtree(aside, ignore_errors=True)
        if shutil.which("debootstrap") is None:
            raise Unavailable(f"no cached {suite} root at {final} and debootstrap not found")
        build = Path(tempfile.mkdtemp(prefix=f".{suite}.build-", dir=base))
        build.chmod(0o755)  # mkdtemp makes 0700: the container's / must be traversable
        log_path = base / f"{suite}.debootstrap.log"
        argv = [
            "debootstrap",
            "--variant=minbase",
            f"--include={DEBOOTSTRAP_INCLUDE}",
            suite,
            str(build),
            mirror(),
        ]
        started = time.monotonic()
        with log_path.open("w") as logf:
            try:
                rc = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    timeout=DEBOOTSTRAP_TIMEOUT,
                    check=False,
                    env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
                ).returncode
            except subprocess.TimeoutExpired:
                rc = -1
        if rc != 0 or not root_complete(build):
            shutil.rmtree(build, ignore_errors=True)
            last = _tail(log_path.read_text(errors="replace"))
            raise Unavailable(
                f"debootstrap {suite} from {mirror()} failed (exit {rc}): {last} "
                f"(log: {log_path}; set OLLAMA_OPS_MIRROR for another mirror)"
            )
        build.rename(final)
        log.info("built %s root in %.0fs", suite, time.monotonic() - started)
        return final


# ---------------------------------------------------------------- python libraries


def _target_environment(py: str) -> dict[str, str]:
    return {
        "python_version": py,
        "python_full_version": f"{py}.0",
        "implementation_name": "cpython",
        "implementation_version": f"{py}.0",
        "platform_python_implementation": "CPython",
        "sys_platform": "linux",
        "os_name": "posix",
        "platform_system": "Linux",
        "platform_machine": platform.machine(),
        "platform_release": "",
        "platform_version": "",
        "extra": "",
    }


def _applies(marker: Marker | None, env: dict[str, str], extras: Sequence[str] = ()) -> bool:
    if marker is None:
        return True
    return any(marker.evaluate({**env, "extra": extra}) for extra in ("", *extras))


def runtime_requirements(py: str) -> list[Requirement]:
    """ollama-ops' runtime dependencies that apply on Python ``py``.

    Read from the installed distribution's metadata (``pip install -e .``
    keeps it in step with pyproject.toml).
    """
    try:
        raw = importlib.metadata.requires("ollama-ops") or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise Unavailable("ollama-ops is not installed in this venv: pip install -e .") from exc
    env = _target_environment(py)
    kept = []
    for line in raw:
        req = Requirement(line)
        if _applies(req.marker, env):
            req.marker = None
            kept.append(req)
    return kept


def _platform_tags(suite: Suite) -> list[str]:
    arch = platform.machine()
    major, minor = suite.glibc
    tags = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 4, -1)]
    tags += [f"manylinux2014_{arch}", f"manylinux2010_{arch}", f"manylinux1_{arch}"]
    return tags


def _pip(args: Sequence[str], what: str) -> None:
    argv = [sys.executable, "-m", "pip", *args]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False, env=env)
    if done.returncode != 0:
        raise Unavailable(f"{what} failed: {_tail(done.stderr or done.stdout, 2)}")


def python_lib(suite: str) -> Path:
    """A cached ``pip install --target`` tree of ollama-ops' runtime dependencies.

    Built for the suite's Python from manylinux wheels that pip downloads on
    this host (the wheels are cached too), byte-compiled by the suite's own
    interpreter.  The tree does not contain ollama_ops itself: that is copied
    fresh from src/ into each container.
    """
    info = SUITES[suite]
    reqs = runtime_requirements(info.python)
    tags = _platform_tags(info)
    key = hashlib.sha256(json.dumps([sorted(map(str, reqs)), tags]).encode()).hexdigest()[:12]
    base = roots_dir() / "pylib"
    final = base / f"py{info.python}-{key}"
    if (final / ".complete").exists():
        return final
    wheels = roots_dir() / "wheels" / f"py{info.python}-{key}"
    root = ensure_root(suite)
    with _locked(base / f".py{info.python}.lock"):
        if (final / ".complete").exists():
            return final
        env = _target_environment(info.python)
        target_args = ["--only-binary=:all:", "--python-version", info.python]
        target_args += ["--implementation", "cp"]
        for tag in tags:
            target_args += ["--platform", tag]
        if not (wheels / ".complete").exists():
            shutil.rmtree(wheels, ignore_errors=True)
            wanted = list(reqs)
            for attempt in range(8):
                download = wheels.with_name(f"{wheels.name}.dl{attempt}")
                shutil.rmtree(download, ignore_errors=True)
                _pip(
                    ["download", "-q", *target_args, "-d", str(download), *map(str, wanted)],
                    f"pip download of {', '.join(map(str, wanted))} for Python {info.python}",
                )
                _, missing = closure_for(download, reqs, env)
                if not missing:
                    download.rename(wheels)
                    (wheels / ".complete").touch()
                    break
                shutil.rmtree(download, ignore_errors=True)
                wanted += missing
            else:
                raise Unavailable(f"cannot close the dependency set for Python {info.python}")
        files, missing = closure_for(wheels, reqs, env)
        if missing:
            raise Unavailable(f"wheel cache {wheels} lacks {', '.join(map(str, missing))}")
        build = Path(tempfile.mkdtemp(prefix=f".py{info.python}.build-", dir=base))
        build.chmod(0o755)
        try:
            _pip(
                [
                    *("install", "-q", "--no-index", "--no-deps", "--no-compile"),
                    *("--target", str(build / "lib"), *target_args, *map(str, files)),
                ],
                f"pip install --target for Python {info.python}",
            )
            shutil.rmtree(build / "lib" / "bin", ignore_errors=True)
            _compile_with(root, build / "lib")
            (build / "lib" / ".complete").touch()
            shutil.rmtree(final, ignore_errors=True)
            (build / "lib").rename(final)
        finally:
            shutil.rmtree(build, ignore_errors=True)
    return final


def _compile_with(root: Path, lib: Path) -> None:
    """Byte-compile ``lib`` with the interpreter of the (read-only) pristine ``root``."""
    machine = f"oo-compile-{secrets.token_hex(4)}"
    done = subprocess.run(
        [
            *("systemd-nspawn", "--quiet", f"--directory={root}", "--read-only"),
            *("--register=no", "--keep-unit", "--private-network", "--link-journal=no"),
            f"--machine={machine}",
            f"--bind={lib}:/mnt",  # /mnt exists in every Debian root; it is read-only
            *("/usr/bin/python3", "-m", "compileall", "-q", "-j0", "-d", LIB_DIR, "/mnt"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    _forget_machine(machine)
    if done.returncode != 0:
        output = _tail(done.stdout + done.stderr, 3)
        raise ContainerError(f"compileall with {root}'s python3 failed: {output}")


def _forget_machine(name: str) -> None:
    """Remove what systemd-nspawn 252 leaves behind when /run is not a tmpfs."""
    shutil.rmtree(Path("/run/systemd/nspawn/propagate") / name, ignore_errors=True)


# ---------------------------------------------------------------- containers


@dataclass(frozen=True)
class HttpReply:
    status: int
    headers: dict[str, str]
    body: str

    def json(self) -> object:
        return json.loads(self.body)


_HTTP_SCRIPT = textwrap.dedent(
    """\
    import json, sys, urllib.error, urllib.request
    a = json.loads(sys.argv[1])
    data = None if a["body"] is None else a["body"].encode()
    req = urllib.request.Request(a["url"], data=data, method=a["method"], headers=a["headers"])
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        r = opener.open(req, timeout=a["timeout"])
    except urllib.error.HTTPError as e:
        r = e
    body = r.read().decode("utf-8", "replace")
    json.dump({"status": r.getcode(), "headers": dict(r.headers), "body": body}, sys.stdout)
    """
)


_counter = 0


def _unique_name(suite: str) -> str:
    global _counter  # noqa: PLW0603 - a per-process sequence number
    _counter += 1
    return f"oo-{suite}-{os.getpid()}-{_counter}-{secrets.token_hex(2)}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _mounted(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mountinfo") as fh:
        return any(line.split()[4] == target for line in fh)


def _proc_status(pid: str) -> dict[str, str]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def _container_pid1(nspawn_pid: int, name: str = "systemd") -> int:
    """The child of systemd-nspawn that is PID 1 of its namespace and runs ``name``."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        fields = _proc_status(proc.name)
        if fields.get("PPid", "").strip() != str(nspawn_pid):
            continue
        nspid = fields.get("NSpid", "").split()
        if len(nspid) >= 2 and nspid[-1] == "1" and fields.get("Name", "").strip() == name:
            return int(proc.name)
    return 0


def _kill_machine(name: str) -> None:
    """SIGKILL the PID 1 and the systemd-nspawn of a container left running by a dead run."""
    wanted = f"--machine={name}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv[0].endswith(b"systemd-nspawn") or wanted not in argv:
            continue
        pid1 = _container_pid1(int(proc.name))
        for pid in (pid1, int(proc.name)):
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def sweep_stale() -> None:
    """Remove container layers left by test runs that were killed."""
    base = roots_dir() / "containers"
    if not base.is_dir():
        return
    for entry in base.iterdir():
        try:
            owner = int(entry.name.split("-")[2])
        except (IndexError, ValueError):
            continue
        if _pid_alive(owner):
            continue
        _kill_machine(entry.name)
        _remove_layers(entry)


def _remove_layers(workdir: Path) -> None:
    merged = workdir / "root"
    if merged.is_dir() and _mounted(merged):
        subprocess.run(["umount", "-l", str(merged)], check=False, capture_output=True)
    shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class Container:
    """A booted, throwaway Debian with a real systemd as its PID 1.

    Use as a context manager or call :meth:`start` and :meth:`stop`.
    Commands run inside with :meth:`exec`, as root, with a clean environment.
    The container has its own network namespace (``--private-network``):
    only ``lo``, so nothing it listens on is exposed, and ports never clash
    between containers.
    """

    PID1_NAME: ClassVar[str] = "systemd"  # what the container's PID 1 runs once started

    suite: str
    boot_timeout: float = BOOT_TIMEOUT
    mode: str = field(default_factory=lambda: os.environ.get("OLLAMA_OPS_ROOT_MODE", "overlay"))
    name: str = ""
    pid: int = 0  # the container's PID 1, as seen from the host
    workdir: Path = Path()
    root: Path = Path()  # the container's / on the host (not its /run, /tmp, /dev...)
    log_path: Path = Path()
    timings: dict[str, float] = field(default_factory=dict)
    _nspawn: subprocess.Popen[bytes] | None = None
    _booted: bool = False

    @property
    def info(self) -> Suite:
        return SUITES[self.suite]

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> Container:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Container:
        check_host()
        pristine = ensure_root(self.suite)
        sweep_stale()
        self.name = self.name or _unique_name(self.suite)
        base = roots_dir() / "containers"
        base.mkdir(parents=True, exist_ok=True)
        self.workdir = base / self.name
        self.workdir.mkdir()
        self.root = self.workdir / "root"
        self.log_path = self.workdir / "nspawn.log"
        try:
            t0 = time.monotonic()
            self._make_root(pristine)
            self.timings["prepare"] = time.monotonic() - t0
            t0 = time.monotonic()
            self._boot()
            self.timings["boot"] = time.monotonic() - t0
        except BaseException:
            self.stop()
            raise
        log.info("%s up: %s", self.name, self.timings)
        return self

    def _make_root(self, pristine: Path) -> None:
        if self.mode == "overlay":
            upper, work = self.workdir / "upper", self.workdir / "work"
            for d in (upper, work, self.root):
                d.mkdir()
            upper.chmod(0o755)  # the upper dir's mode becomes the mode of /
            opts = f"lowerdir={pristine},upperdir={upper},workdir={work}"
            done = subprocess.run(
                ["mount", "-t", "overlay", "overlay", "-o", opts, str(self.root)],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode == 0:
                return
            log.warning("overlay mount failed (%s); copying instead", _tail(done.stderr))
            self.root.rmdir()
            self.mode = "copy"
        done = subprocess.run(
            ["cp", "-a", "--reflink=auto", str(pristine), str(self.root)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise Unavailable(f"cannot copy {pristine}: {_tail(done.stderr)}")

    def _boot(self) -> None:
        argv = [
            "systemd-nspawn",
            "--boot",
            f"--directory={self.root}",
            f"--machine={self.name}",
            "--register=no",
            "--keep-unit",
            "--console=passive",
            "--private-network",
            "--link-journal=no",
        ]
        deadline = self._spawn(argv)
        state = ""
        while True:
            self._check_nspawn_alive("while booting")
            done = self.exec(["systemctl", "is-system-running"], check=False, timeout=10)
            state = done.stdout.strip()
            if state in ("running", "degraded"):
                break
            if time.monotonic() > deadline:
                raise BootError(
                    f"{self.name}: systemd not up after {self.boot_timeout:g}s "
                    f"(state {state or _tail(done.stderr)!r}):\n{self._log_tail()}"
                )
            time.sleep(0.1)
        self._booted = True
        if state == "degraded":
            failed = self.exec(["systemctl", "--failed", "--no-legend", "--plain"], check=False)
            log.warning("%s booted degraded: %s", self.name, failed.stdout.strip())

    def _spawn(self, argv: list[str]) -> float:
        """Start systemd-nspawn and wait for the container's PID 1; the boot's deadline."""
        with self.log_path.open("wb") as logf:
            self._nspawn = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.boot_timeout
        while not self.pid:
            self._check_nspawn_alive("while starting")
            self.pid = self._find_pid1()
            if time.monotonic() > deadline:
                raise BootError(f"{self.name}: no container PID 1 after {self.boot_timeout:g}s")
            if not self.pid:
                time.sleep(0.05)
        return deadline

    def _check_nspawn_alive(self, when: str) -> None:
        assert self._nspawn is not None
        rc = self._nspawn.poll()
        if rc is not None:
            raise BootError(f"systemd-nspawn exited {rc} {when}:\n{self._log_tail()}")

    def _find_pid1(self) -> int:
        assert self._nspawn is not None
        return _container_pid1(self._nspawn.pid, self.PID1_NAME)

    def _log_tail(self, lines: int = 20) -> str:
        """The end of the console log (the workdir goes away with stop())."""
        return "\n".join(self.nspawn_log().splitlines()[-lines:])

    def nspawn_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        """Power off (SIGKILL if it hangs), reap systemd-nspawn, remove the layers."""
        t0 = time.monotonic()
        proc = self._nspawn
        if proc is not None and proc.poll() is None:
            if self._booted:
                self.exec(["systemctl", "--no-block", "poweroff"], check=False, timeout=10)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    log.warning("%s: no poweroff after %gs, killing", self.name, timeout)
            deadline = time.monotonic() + 10
            while proc.poll() is None and time.monotonic() < deadline:
                # Half-booted or hung: kill its PID 1, the whole PID namespace goes.
                pid1 = self.pid or _container_pid1(proc.pid)
                if pid1:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid1, signal.SIGKILL)
                time.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self._nspawn = None
        self._booted = False
        self.pid = 0
        if self.name:
            _forget_machine(self.name)
        if self.workdir != Path():
            _remove_layers(self.workdir)
        self.timings["stop"] = time.monotonic() - t0

    @property
    def running(self) -> bool:
        return self._nspawn is not None and self._nspawn.poll() is None and self.pid > 0

    # ------------------------------------------------------------ commands

    def _nsenter(self, namespaces: Sequence[str]) -> list[str]:
        if not self.running:
            raise ContainerError(f"container {self.name or self.suite} is not running")
        return ["nsenter", f"--target={self.pid}", *namespaces, "--"]

    def exec(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 60.0,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the container (all its namespaces, its root), as root.

        The environment is clean (PATH, LANG=C.UTF-8, no pager, no colour)
        plus ``env``.  With ``check``, a non-zero exit raises ContainerError
        carrying the command, exit status, stdout and stderr.
        """
        full_env = {
            "PATH": CONTAINER_PATH,
            "LANG": "C.UTF-8",
            "SYSTEMD_PAGER": "",
            "SYSTEMD_COLORS": "0",
            "TERM": "dumb",
            "HOME": "/root",
        }
        full_env.update(env or {})
        full = [*self._nsenter(["--all", "--root", "--wd"]), *argv]
        return self._run(full, argv, check=check, timeout=timeout, input=input, env=full_env)

    def netns_exec(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 60.0,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a HOST program inside the container's network namespace only.

        Its files and environment are the host's (e.g. this venv's Python
        with httpx or the ``ollama`` client), its 127.0.0.1 is the container's.
        """
        full_env = {**os.environ, **(env or {})}
        full = [*self._nsenter(["--net"]), *argv]
        return self._run(full, argv, check=check, timeout=timeout, input=input, env=full_env)

    def _run(
        self,
        full: Sequence[str],
        shown: Sequence[str],
        *,
        check: bool,
        timeout: float,
        input: str | None,
        env: Mapping[str, str],
    ) -> subprocess.CompletedProcess[str]:
        try:
            done = subprocess.run(
                list(full),
                input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=dict(env),
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ContainerError(
                f"[{self.name}] {shlex.join(shown)}: no exit after {timeout:g}s"
            ) from exc
        if check and done.returncode != 0:
            raise ContainerError(
                f"[{self.name}] {shlex.join(shown)} exited {done.returncode}\n"
                f"--- stdout\n{done.stdout.rstrip()}\n--- stderr\n{done.stderr.rstrip()}"
            )
        return done

    def sh(self, script: str, *, check: bool = True, timeout: float = 60.0) -> str:
        """Run a /bin/sh script inside; return its stdout."""
        return self.exec(["/bin/sh", "-ec", script], check=check, timeout=timeout).stdout

    # ------------------------------------------------------------ files

    def path(self, path: str) -> Path:
        """The host path of ``path`` on the container's root filesystem.

        Only for what lives on the root disk (/etc, /usr, /opt, /var...):
        not /run, /tmp, /dev, /proc, /sys (mounted inside the container), and
        absolute symlinks are not followed inside the root.  Prefer
        :meth:`read_file` / :meth:`write_file`, which see the container's view.
        """
        return self.root / path.lstrip("/")

    def write_file(self, path: str, text: str, mode: int = 0o644, owner: str | None = None) -> None:
        """Write ``text`` at ``path`` inside (parents created), then chmod/chown."""
        script = 'mkdir -p "$(dirname "$1")"; cat > "$1"; chmod "$2" "$1"'
        script += '; if [ -n "$3" ]; then chown "$3" "$1"; fi'
        self.exec(["/bin/sh", "-ec", script, "sh", path, f"{mode:o}", owner or ""], input=text)

    def read_file(self, path: str) -> str:
        return self.exec(["cat", "--", path]).stdout

    def exists(self, path: str) -> bool:
        return self.exec(["test", "-e", path], check=False).returncode == 0

    # ------------------------------------------------------------ systemd

    def systemctl(
        self, *args: str, check: bool = True, timeout: float = 90.0
    ) -> subprocess.CompletedProcess[str]:
        return self.exec(["systemctl", "--no-pager", *args], check=check, timeout=timeout)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """``systemctl show`` of ``unit`` (only ``props`` when given) as a dict."""
        args = ["show", unit]
        if props:
            args[1:1] = ["-p", ",".join(props)]
        return parse_show(self.systemctl(*args).stdout)

    def journal(self, unit: str | None = None, *, lines: int | None = None) -> str:
        """The journal of this boot (of ``unit`` if given), short-precise format."""
        args = ["journalctl", "--no-pager", "-b", "-o", "short-precise"]
        if unit:
            args += ["-u", unit]
        if lines:
            args += ["-n", str(lines)]
        return self.exec(args, check=False).stdout

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        """Poll ``predicate`` every 0.1 s until true; ContainerError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise ContainerError(f"[{self.name}] timed out after {timeout:g}s: {what}")
            time.sleep(0.1)

    def wait_active(self, unit: str, timeout: float = 30.0) -> dict[str, str]:
        """Wait until ``unit`` is active (ContainerError if it fails); its state props."""
        props: dict[str, str] = {}

        def settled() -> bool:
            nonlocal props
            props = self.show(unit, "ActiveState", "SubState", "Result", "NRestarts")
            if props.get("ActiveState") == "failed":
                raise ContainerError(
                    f"[{self.name}] {unit} failed: {props}\n{self.journal(unit, lines=40)}"
                )
            return props.get("ActiveState") == "active"

        try:
            self.wait_for(settled, f"{unit} active", timeout)
        except ContainerError as exc:
            raise ContainerError(f"{exc}\n{props}\n{self.journal(unit, lines=40)}") from None
        return props

    # ------------------------------------------------------------ HTTP inside

    def http(
        self,
        method: str,
        url: str,
        *,
        body: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> HttpReply:
        """One HTTP request made inside the container by its own python3 (urllib).

        Any HTTP status is returned; a connection failure raises ContainerError.
        """
        args = {
            "method": method,
            "url": url,
            "body": body,
            "headers": dict(headers or {}),
            "timeout": timeout,
        }
        done = self.exec(["python3", "-c", _HTTP_SCRIPT, json.dumps(args)], timeout=timeout + 15)
        data = json.loads(done.stdout)
        return HttpReply(int(data["status"]), dict(data["headers"]), str(data["body"]))

    def wait_http(self, url: str, timeout: float = 30.0) -> HttpReply:
        """Poll ``GET url`` until it answers with any HTTP status."""
        reply: list[HttpReply] = []

        def answered() -> bool:
            try:
                reply.append(self.http("GET", url, timeout=5))
            except ContainerError:
                return False
            return True

        self.wait_for(answered, f"GET {url} answers", timeout)
        return reply[-1]


# ---------------------------------------------------------------- installers

_OLLAMA_OPS_LAUNCHER = f"""\
#!/usr/bin/python3 -I
import sys
sys.path.insert(0, {LIB_DIR!r})
from ollama_ops.cli.main import main
sys.exit(main())
"""

_OLLAMA_LAUNCHER = f"""\
#!/usr/bin/python3 -I
import sys
sys.path.insert(0, {LIB_DIR!r})
from ollama_ops.sim.cli import main
sys.exit(main())
"""

# scripts/install.sh of ollama/ollama, configure_systemd(), with BINDIR and
# the installing root shell's PATH filled in.
INSTALLER_UNIT = f"""\
[Unit]
Description=Ollama Service
After=network-online.target

[Service]
ExecStart={OLLAMA_BIN} serve
User=ollama
Group=ollama
Restart=always
RestartSec=3
Environment="PATH={CONTAINER_PATH}"

[Install]
WantedBy=default.target
"""


def install_ollama_ops(container: Container) -> None:
    """Make ollama-ops importable by the container's /usr/bin/python3.

    Dependencies from the cached --target tree for the suite's Python, then
    src/ollama_ops copied fresh, both into /opt/ollama-ops/lib; plus the
    /usr/local/bin/ollama-ops launcher.  On bullseye (Python 3.9) the main
    package does not run; only ``ollama_ops.sim`` does.  Idempotent.
    """
    lib = container.path(LIB_DIR)
    if not (lib / ".complete").exists():
        shutil.copytree(python_lib(container.suite), lib, symlinks=True, dirs_exist_ok=True)
        for d in (lib, lib.parent):
            d.chmod(0o755)
    dest = lib / "ollama_ops"
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(
        SRC_PACKAGE, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), symlinks=True
    )
    # Byte-compile with the container's Python; 3.10+ syntax fails on 3.9: fine.
    container.exec(
        ["python3", "-m", "compileall", "-q", "-d", *[f"{LIB_DIR}/ollama_ops"] * 2],
        check=False,
    )
    container.write_file(OLLAMA_OPS_BIN, _OLLAMA_OPS_LAUNCHER, mode=0o755)


def install_simulator_as_ollama(container: Container) -> None:
    """Install /usr/local/bin/ollama running ``ollama_ops.sim.cli.main()``.

    Installs the library first (see :func:`install_ollama_ops`) when needed.
    """
    if not container.path(f"{LIB_DIR}/ollama_ops").is_dir():
        install_ollama_ops(container)
    container.write_file(OLLAMA_BIN, _OLLAMA_LAUNCHER, mode=0o755)


def create_ollama_user(container: Container) -> None:
    """Create the ``ollama`` user exactly as Ollama's official installer does."""
    container.sh(
        """
        if ! id ollama >/dev/null 2>&1; then
            useradd -r -s /bin/false -U -m -d /usr/share/ollama ollama
        fi
        for group in render video; do
            if getent group "$group" >/dev/null 2>&1; then
                usermod -a -G "$group" ollama
            fi
        done
        usermod -a -G ollama root
        """
    )


def write_installer_unit(container: Container, *, start: bool = False) -> None:
    """Write the installer's /etc/systemd/system/ollama.service.

    With ``start``, also do what the installer does next: daemon-reload,
    enable, restart (wait for it with ``container.wait_active("ollama")``).
    """
    container.write_file(OLLAMA_UNIT, INSTALLER_UNIT)
    container.systemctl("daemon-reload")
    if start:
        container.systemctl("enable", "ollama")
        container.systemctl("restart", "ollama")
