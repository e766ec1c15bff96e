"""ollama-ops' own state directory under attack: symlinks, tampered manifests, leftovers.

Everything under ``<root>/var/lib/ollama-ops`` may have been made by somebody
else (``--root`` on an image, a tampered host). Whatever is there, apply and
rollback stay inside the root, refuse with one line (exit 6), and change
nothing — no partial restore.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ollama_ops.apply import records
from ollama_ops.apply import transaction as apply
from ollama_ops.errors import ExitStatus, OpsError, StateError, exit_status
from ollama_ops.model import config
from ollama_ops.plan import compose
from ollama_ops.render import systemd as render
from tests.helpers import INSTALLER_UNIT, fake_runtime, host

STATE = "var/lib/ollama-ops"
DROPIN = "/etc/systemd/system/ollama.service.d/50-ollama-ops.conf"
MODULES = "/etc/modules-load.d/ollama-ops-nvidia.conf"


def files_for(name: str) -> tuple[Any, dict[str, str]]:
    d = compose.build(host(name), config.DeploymentConfig())
    return d, render.render(d)


def snapshot(base: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under base, symlinks not followed: kind, mode and bytes."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st_ = path.lstat()
            key = str(path.relative_to(base))
            if stat.S_ISLNK(st_.st_mode):
                out[key] = ("link", os.readlink(path))
            elif stat.S_ISREG(st_.st_mode):
                out[key] = ("file", stat.S_IMODE(st_.st_mode), path.read_bytes())
            else:
                out[key] = ("other", stat.S_IMODE(st_.st_mode))
    return out


@pytest.fixture
def applied(tmp_path: Path) -> Path:
    """A root after one apply of the GPU plan (a drop-in and a modules-load file): generation 1."""
    root = tmp_path / "root"
    unit = root / "etc/systemd/system/ollama.service"
    unit.parent.mkdir(parents=True)
    unit.write_text(INSTALLER_UNIT)
    (root / "usr/share/ollama").mkdir(parents=True)
    (root / "etc/shadow").write_text("root:$6$secret:19000:0:99999:7:::\n")
    (root / "etc/shadow").chmod(0o640)
    d, files = files_for("nvidia-1x24g")
    assert apply.apply(fake_runtime(root), d, files).generation == 1
    return root


def refused(action: Callable[[], object]) -> StateError:
    with pytest.raises(StateError) as info:
        action()
    message = str(info.value)
    assert "\n" not in message and exit_status(info.value) == ExitStatus.STATE
    return info.value


def do_apply(root: Path) -> object:
    d, files = files_for("cpu-small")  # differs from what is installed: apply has work to do
    return apply.apply(fake_runtime(root), d, files)


def do_rollback(root: Path) -> object:
    return apply.rollback(fake_runtime(root), "ollama.service")


# --- item 2: symlinks in the state directory ----------------------------------------------


@pytest.mark.parametrize(
    "entry",
    [
        "var",
        "var/lib",
        STATE,
        f"{STATE}/lock",
        f"{STATE}/owned.json",
        f"{STATE}/journal.json",
        f"{STATE}/generations",
        f"{STATE}/generations/1",
        f"{STATE}/generations/1/manifest.json",
    ],
)
@pytest.mark.parametrize("command", [do_apply, do_rollback, apply.recover])
def test_a_symlink_anywhere_in_the_state_directory_is_refused_and_not_followed(
    applied: Path, tmp_path: Path, entry: str, command: Callable[..., object]
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    real = applied / entry
    moved = outside / real.name
    if real.exists():
        shutil.move(str(real), str(moved))  # the real thing, now reached through the link
    elif entry.endswith("journal.json"):
        moved.write_bytes((applied / STATE / "generations/1/manifest.json").read_bytes())
    real.symlink_to(moved)
    inside, behind = snapshot(applied), snapshot(outside)
    if command is apply.recover and entry.endswith("owned.json"):
        assert apply.recover(fake_runtime(applied)) is None  # recovery never reads it
    else:
        argument = fake_runtime(applied) if command is apply.recover else applied
        error = refused(lambda: command(argument))
        assert "symlink" in str(error) or "outside --root" in str(error)
    assert snapshot(applied) == inside
    assert snapshot(outside) == behind  # nothing behind the link was read into place or removed


def test_rollback_root_never_deletes_what_a_symlinked_generation_points_to(
    applied: Path, tmp_path: Path
) -> None:
    """The issue's case: rollback --root followed generations/N, emptied it, then crashed."""
    elsewhere = tmp_path / "precious"
    elsewhere.mkdir()
    (elsewhere / "data").write_text("keep me")
    generation = applied / STATE / "generations/2"
    generation.symlink_to(elsewhere)
    refused(lambda: do_rollback(applied))
    assert (elsewhere / "data").read_text() == "keep me"


def test_a_symlinked_lock_creates_nothing_where_it_points(applied: Path, tmp_path: Path) -> None:
    target = tmp_path / "created-by-the-lock"
    (applied / STATE / "lock").unlink()
    (applied / STATE / "lock").symlink_to(target)
    refused(lambda: do_apply(applied))
    assert not target.exists()


@pytest.fixture
def alarm() -> Iterator[None]:
    """Fail instead of hanging forever (the bug this guards against is a hang)."""

    def timeout(signum: int, frame: object) -> None:
        raise TimeoutError("blocked reading the state directory")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.usefixtures("alarm")
@pytest.mark.parametrize("name", ["owned.json", "journal.json", "generations/1/manifest.json"])
def test_a_fifo_in_the_state_directory_is_refused_without_blocking(
    applied: Path, name: str
) -> None:
    path = applied / STATE / name
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    command = do_rollback if name.startswith("generations") else do_apply
    assert "not a regular file" in str(refused(lambda: command(applied)))


# --- item 3: the manifest is validated whole -----------------------------------------------


def manifest_path(root: Path) -> Path:
    return root / STATE / "generations/1/manifest.json"


def tamper(root: Path, change: Callable[[dict[str, Any]], object]) -> None:
    path = manifest_path(root)
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def add_file(
    path: str, content: object = None, **tables: object
) -> Callable[[dict[str, Any]], None]:
    """A second entry after the valid ones (a partial restore would show)."""

    def change(data: dict[str, Any]) -> None:
        data["files"][path] = b64("x") if content is None else content
        for table, value in tables.items():
            data.setdefault(table, {})[path] = value

    return change


def setter(key: str, value: object) -> Callable[[dict[str, Any]], None]:
    return lambda data: data.__setitem__(key, value)


OK = "/etc/systemd/system/zz-ollama-ops.conf"  # valid, sorts after the real entries
BAD_PATHS = [
    "/etc/shadow",
    "/etc/systemd/system/../../shadow",
    "/etc/systemd/system/x/../../../../../shadow",
    "etc/systemd/system/relative.conf",
    "/etc/systemd/system/",
    "/etc/systemd/system/a\x00b",
    "/etc/systemd/system/a\nb",
    "/etc/systemd/system/a\x1b[31m",
    "//etc/systemd/system/x",
    "/etc/systemd/system/./x",
    "/etc/systemd/system/x/",
    "/etc/systemd/systemx/y",
    "/etc/modules-load.d/../shadow",
    "/etc/modules-load.d/..",
]
TAMPERED: list[tuple[str, Callable[[dict[str, Any]], object]]] = [
    *[(f"path {p!r}", add_file(p)) for p in BAD_PATHS],
    *[
        (f"content {c!r}", add_file(OK, content=c))
        for c in ["not base64!", "AAA", 5, ["x"], "ü", {}]
    ],
    *[
        (f"mode {m!r}", add_file(OK, modes=m))
        for m in ["644", 0o10000, -1, 1.5, True, None, 0o666, 0o777, 0o602, 10**30]
    ],
    *[
        (f"owner {o!r}", add_file(OK, owners=o))
        for o in [[0], ["0", "0"], [-1, 0], [2**32, 0], "root", [True, 0], [0, 0, 0]]
    ],
    ("modes of an absent file", lambda d: d["modes"].__setitem__(OK, 0o644)),
    ("modes not an object", setter("modes", [0o644])),
    ("files not an object", setter("files", [DROPIN])),
    ("files missing", lambda d: d.pop("files")),
    *[
        (f"enabled_unit {u!r}", setter("enabled_unit", u))
        for u in ["sshd.service", "../../x.service", 5, "ollama.service", "a b.service"]
    ],
    *[
        (f"previous_owned {o!r}", setter("previous_owned", o))
        for o in [["/etc/shadow"], "x", [5], {"a": 1}]
    ],
    *[(f"dirs {d!r}", setter("dirs", d)) for d in [["/usr"], ["/etc/systemd/system/../.."], "x"]],
    ("format 99", setter("format", 99)),
    ("created not text", setter("created", 5)),
]


@pytest.mark.parametrize(("name", "change"), TAMPERED, ids=[n for n, _ in TAMPERED])
def test_a_tampered_manifest_is_one_line_exit_6_and_nothing_is_restored(
    applied: Path, name: str, change: Callable[[dict[str, Any]], object]
) -> None:
    tamper(applied, change)
    before = snapshot(applied)
    error = refused(lambda: do_rollback(applied))
    assert "is not a manifest ollama-ops wrote" in str(error)
    assert snapshot(applied) == before  # not even the valid entries were restored


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("not JSON", b"{not json"),
        ("not an object", b"[]"),
        ("not UTF-8", b'{"files": {"\xff": null}}'),
        ("duplicate keys", b'{"files": {}, "files": {"/etc/shadow": null}}'),
        ("nested without end", b"[" * 100_000 + b"]" * 100_000),
        ("a huge number", b'{"files": {}, "format": 1' + b"0" * 5000 + b"}"),
    ],
)
def test_a_manifest_that_is_not_ours_is_refused_as_a_whole(
    applied: Path, name: str, raw: bytes
) -> None:
    manifest_path(applied).write_bytes(raw)
    before = snapshot(applied)
    refused(lambda: do_rollback(applied))
    assert snapshot(applied) == before


def test_deleting_a_file_through_the_manifest_is_refused(applied: Path) -> None:
    tamper(applied, lambda d: d["files"].__setitem__("/etc/shadow", None))
    refused(lambda: do_rollback(applied))
    assert (applied / "etc/shadow").read_text().startswith("root:")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("template") / "root"
    unit = root / "etc/systemd/system/ollama.service"
    unit.parent.mkdir(parents=True)
    unit.write_text(INSTALLER_UNIT)
    (root / "usr/share/ollama").mkdir(parents=True)
    d, files = files_for("nvidia-1x24g")
    apply.apply(fake_runtime(root), d, files)
    return root


def fresh(template: Path, tmp_path: Path) -> Path:
    """A copy of the template for one hypothesis example."""
    return Path(
        shutil.copytree(template, Path(tempfile.mkdtemp(dir=tmp_path)) / "root", symlinks=True)
    )


def outside_the_ownable_dirs(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    ownable = ("etc/systemd/system/", "etc/modules-load.d", STATE, "etc/systemd/system")
    return sorted(k for k in changed if not k.startswith(ownable))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.one_of(
        st.text(max_size=40),
        st.builds(
            lambda prefix, tail: prefix + tail,
            st.sampled_from([*records.OWNABLE_PREFIXES, "/etc/", "/", "//"]),
            st.text(alphabet=st.sampled_from("ab./\x00\n-"), max_size=12),
        ),
    ),
    mode=st.one_of(st.integers(-10, 0o20000), st.text(max_size=3), st.floats(), st.booleans()),
)
def test_any_path_and_mode_in_a_manifest_is_refused_or_restored_inside_the_root(
    template: Path, tmp_path: Path, path: str, mode: object
) -> None:
    root = fresh(template, tmp_path)
    tamper(root, add_file(path, content=b64("[Unit]\n"), modes=mode))
    before = snapshot(root)
    valid = records.is_ownable(path) and records.valid_mode(mode)
    try:
        do_rollback(root)
    except OpsError as exc:
        assert not valid, exc
        assert isinstance(exc, StateError) and "\n" not in str(exc)
        assert snapshot(root) == before
    else:
        assert valid
        target = root / path.lstrip("/")
        assert target.read_text() == "[Unit]\n" and stat.S_IMODE(target.stat().st_mode) == mode
        assert outside_the_ownable_dirs(before, snapshot(root)) == []
    shutil.rmtree(root)


# --- item 6: leftovers of a crash or a full disk -------------------------------------------


@pytest.mark.parametrize("leftover", ["empty", "temp manifest", "empty manifest dir"])
def test_a_leftover_generation_directory_does_not_break_later_applies(
    applied: Path, leftover: str
) -> None:
    """A kill between mkdir and manifest (before journals existed), or a full disk."""
    generation = applied / STATE / "generations/2"
    generation.mkdir(mode=0o700)
    if leftover == "temp manifest":
        (generation / ".manifest.json.ollama-ops.tmp").write_text('{"files": {')
    (applied / STATE / ".owned.json.ollama-ops.tmp").write_text("[")
    assert do_apply(applied).generation == 2  # type: ignore[attr-defined]
    assert sorted(os.listdir(applied / STATE)) == ["generations", "lock", "owned.json"]
    assert do_rollback(applied) == 2
    assert do_rollback(applied) == 1


def test_a_leftover_holding_something_else_is_skipped_not_fatal(applied: Path) -> None:
    generation = applied / STATE / "generations/2"
    generation.mkdir(mode=0o700)
    (generation / "notes.txt").write_text("an operator's file: not ours to delete")
    assert do_apply(applied).generation == 3  # type: ignore[attr-defined]
    assert (generation / "notes.txt").is_file()
    assert do_rollback(applied) == 3
    assert do_rollback(applied) == 1
    assert do_rollback(applied) is None


def test_a_manifest_from_before_journals_still_rolls_back(applied: Path) -> None:
    """Format 1 (no owners, no dirs, no format key) as the previous version wrote it."""

    def as_format_1(data: dict[str, Any]) -> None:
        for key in ("format", "owners", "dirs"):
            data.pop(key)
        data["previous_owned"] = []

    tamper(applied, as_format_1)
    assert do_rollback(applied) == 1
    assert not (applied / DROPIN.lstrip("/")).exists()
    assert not (applied / MODULES.lstrip("/")).exists()
