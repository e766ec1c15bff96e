"""What the tree under --root says about the Ollama install, and how it beats the facts.

Facts from ``facts --json`` may come from another machine than the tree the
files are written into. The tree's own /etc/passwd, /etc/group, installed
unit and binary are what the service will actually run with, so they win;
every field where the facts say something else is reported as a note
instead of being papered over. ``read`` is the edge (files under the root,
read inside it); ``reconcile`` is pure.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

from ollama_ops.errors import OpsError, PlanError
from ollama_ops.model.facts import OllamaInstall
from ollama_ops.unitfile import effective, inroot
from ollama_ops.unitfile.paths import is_plain_path, normalize

OLLAMA_USER = "ollama"
BINARIES = ("/usr/local/bin/ollama", "/usr/bin/ollama", "/bin/ollama")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?")


@dataclass(frozen=True)
class RootInstall:
    """The install as the tree shows it; None wherever the tree does not say."""

    users: dict[str, tuple[str, str]] | None = None  # /etc/passwd: user -> (gid, home)
    groups: dict[str, str] | None = None  # /etc/group: gid -> name
    unit_user: str | None = None  # User= of the installed unit
    unit_group: str | None = None
    unit_dynamic: bool = False  # DynamicUser=yes in the installed unit
    binary: str | None = None  # the ollama binary present under the root


def _records(root: Path, path: str) -> list[list[str]] | None:
    try:
        text = inroot.read_text(root, path)
    except OpsError:
        return None
    return [
        line.strip().split(":")
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith(("#", "+", "-"))
    ]


def _unit(root: Path, unit_name: str) -> tuple[str | None, str | None, bool, str | None]:
    """(User=, Group=, DynamicUser=yes, ExecStart= program) of the installed unit."""
    try:
        unit = effective.load_effective(root, unit_name)
    except OpsError:  # the preflight reports a broken unit with its line
        return None, None, False, None
    if unit.fragment is None or unit.masked:
        return None, None, False, None

    def last(key: str) -> str | None:
        found = unit.last("Service", key)
        return None if found is None else found.value.strip()

    dynamic = (last("DynamicUser") or "").lower() in ("yes", "true", "1", "on", "y", "t")
    program = (last("ExecStart") or "").split(" ", 1)[0].lstrip("-@:+!")
    return last("User"), last("Group"), dynamic, program or None


def _present(root: Path, path: str | None) -> bool:
    if path is None or not is_plain_path(path):
        return False
    try:
        return inroot.resolve(root, path).is_file()
    except OSError:
        return False


def read(root: Path, unit_name: str) -> RootInstall:
    """What the tree under ``root`` says about users, the unit and the binary."""
    passwd = _records(root, "/etc/passwd")
    group = _records(root, "/etc/group")
    user, grp, dynamic, program = _unit(root, unit_name)
    candidates = ([program] if program and program.endswith("/ollama") else []) + list(BINARIES)
    return RootInstall(
        users=None if passwd is None else {r[0]: (r[3], r[5]) for r in passwd if len(r) >= 7},
        groups=None if group is None else {r[2]: r[0] for r in group if len(r) >= 3},
        unit_user=user,
        unit_group=grp,
        unit_dynamic=dynamic,
        binary=next((b for b in candidates if _present(root, b)), None),
    )


def _account(found: RootInstall, install: OllamaInstall, root: str) -> dict[str, str | None]:
    """The user, group and home the tree runs the service as, where the tree says."""
    if found.unit_dynamic:
        return {"user": None, "group": None, "home": None}
    user = found.unit_user if found.unit_user and _NAME.fullmatch(found.unit_user) else None
    if user is None and found.users is not None:
        user = OLLAMA_USER if OLLAMA_USER in found.users else None
        if user is None:
            return {"user": None, "group": None, "home": None}
    if user is None:
        return {}
    out: dict[str, str | None] = {"user": user}
    entry = (found.users or {}).get(user)
    if entry is not None:
        home = entry[1]
        if not is_plain_path(home):
            raise PlanError(
                f"the home of user {user} in {root}/etc/passwd is {home[:60]!r}, which cannot "
                "be written into ReadWritePaths=; give the user a plain home such as "
                "/usr/share/ollama"
            )
        out["home"] = normalize(home)
    elif found.users is not None:
        raise PlanError(
            f"the unit under {root} runs as User={user}, which is not in {root}/etc/passwd: "
            f"systemd cannot start it; create the user or fix User="
        )
    group = found.unit_group or ((found.groups or {}).get(entry[0]) if entry is not None else None)
    if group is not None or found.groups is not None or user != install.user:
        out["group"] = group
    return out


def reconcile(
    install: OllamaInstall, found: RootInstall, root: str
) -> tuple[OllamaInstall, list[str]]:
    """The install with the tree's answers in place of the facts', and a note per contradiction."""
    notes: list[str] = []
    changes = _account(found, install, root)
    if found.binary is not None:
        changes["binary"] = found.binary
    elif install.binary is not None:
        notes.append(
            f"the facts name the binary {install.binary}, which is not under {root}; "
            "install ollama there before starting the service"
        )
    for key, value in changes.items():
        said = getattr(install, key)
        if said != value:
            notes.append(
                f"the facts say ollama.{key} = {said!r} but {root} has {value!r}: "
                f"{root} wins, as it is what the service will run with"
            )
    if changes.get("binary", install.binary) != install.binary:
        changes["version"] = None
    return dataclasses.replace(install, **changes), notes
