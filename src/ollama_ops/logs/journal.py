"""Reading the unit's journal: `journalctl -o json` through the runtime, namespace found by itself.

With ``LogNamespace=`` the service's own lines live in the namespace's
journal while systemd's lines about the unit (started, failed, OOM kill,
restart) stay in the main one. ``journalctl --namespace=+NAME`` reads both,
interleaved by time, so the namespace is looked up first: from
``systemctl show -p LogNamespace`` on the live host, else from the unit
files under the root.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ollama_ops.errors import CommandError, OpsError
from ollama_ops.logs.records import FIELDS, Record, from_json
from ollama_ops.runtime import Runtime
from ollama_ops.unitfile import effective

# journalctl's hints when it shows the caller only part of the journal, or none.
_UNREADABLE = (
    "insufficient permissions",
    "not seeing messages from other users and the system",
    "no journal files were found",
)


@dataclass(frozen=True)
class JournalRead:
    records: tuple[Record, ...]
    namespace: str | None
    truncated: bool


def namespace_of(rt: Runtime, unit: str) -> str | None:
    """The unit's LogNamespace=, or None for the main journal."""
    if rt.live:
        try:
            value = rt.systemctl().show(unit, ["LogNamespace"]).get("LogNamespace", "")
        except OpsError:
            value = ""
        if value:
            return value
    try:
        assembled = effective.load_effective(rt.root, unit)
    except OpsError:
        return None
    last = assembled.last("Service", "LogNamespace")
    return last.value if last is not None and last.value else None


def journalctl_argv(
    rt: Runtime, unit: str, since: str, namespace: str | None, limit: int
) -> list[str]:
    argv = ["journalctl", "--no-pager", "--quiet", "-o", "json"]
    argv += ["--output-fields=" + ",".join(FIELDS), "-u", unit, "--since", since, "-n", str(limit)]
    if namespace:
        argv.append(f"--namespace=+{namespace}")  # the namespace and the main journal, merged
    if not rt.live:
        argv.append(f"--root={rt.root}")
    return argv


def read(rt: Runtime, unit: str, since: str, limit: int) -> JournalRead:
    """The unit's records since ``since`` (newest ``limit``); CommandError, one line, if unreadable."""
    namespace = namespace_of(rt, unit)
    argv = journalctl_argv(rt, unit, since, namespace, limit)
    done = rt.run(argv, check=False, timeout=120.0)
    complaint = done.stderr.strip().lower()
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise CommandError(f"journalctl cannot read the journal of {unit}: {last}")
    if any(hint in complaint for hint in _UNREADABLE):
        raise CommandError(
            f"journalctl cannot read the system journal as this user ({complaint.splitlines()[0]}); "
            "run as root or add the user to the systemd-journal group"
        )
    records: list[Record] = []
    for line in done.stdout.splitlines():
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a rotating journal: skip it, keep the rest
        if isinstance(data, dict):
            records.append(from_json(data))
    return JournalRead(tuple(records), namespace, len(records) >= limit)
