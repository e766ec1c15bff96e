#!/usr/bin/python
"""Ansible module shipped in the ollama_ops role: plan and apply on the target itself.

It runs on the target with the target's Python and drives the installed
``ollama-ops`` command (its stable interface), never imports it, so the
module and the tool can only disagree through documented exit codes:
0 nothing to change, 1 changes pending (``--dry-run``), anything else an
error whose last line of stderr is ollama-ops' own one-line message.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: ollama_ops_apply
short_description: Plan and apply the ollama-ops deployment on this host
description:
  - Renders the deployment config (TOML) from O(config), gathers this host's facts with
    C(ollama-ops facts --json), validates and plans with C(ollama-ops apply --dry-run), then
    applies with C(ollama-ops apply) (atomic writes, daemon-reload, restart, verification and
    automatic rollback) and installs the config file only once the apply succeeded.
  - Reports C(changed) only when a file changed. Check mode stops after the dry-run; diff mode
    returns the config diff and the unified diff of the unit files.
options:
  config:
    description: The deployment config, one dict per TOML table (service, limits, ...).
    type: dict
    default: {}
  executable:
    description: The ollama-ops command on the target.
    type: path
    default: /usr/local/bin/ollama-ops
  config_path:
    description: Where the config file goes (inside O(root)).
    type: path
    default: /etc/ollama-ops/ollama-ops.toml
  root:
    description: Operate on files under this directory; other than V(/), nothing is restarted.
    type: path
    default: /
  timeout:
    description: Seconds apply waits for the API after the restart.
    type: float
    default: 60
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
author: ollama-ops
"""

RETURN = r"""
generation:
  description: The generation this run applied (what C(ollama-ops rollback) undoes), or null.
  type: int
  returned: always
config_changed:
  description: Whether the config file was (or in check mode would be) rewritten.
  type: bool
  returned: always
config_before:
  description: The config file's text before this run, null when there was none.
  type: str
  returned: always
changes:
  description: The files apply wrote, as C(ollama-ops apply) lists them.
  type: list
  elements: str
  returned: always
"""

HEADER = "# Written by the ollama_ops Ansible role from inventory variables; edit those.\n"
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


class RenderError(ValueError):
    """A value that has no TOML form."""


def _toml_string(text: str) -> str:
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def toml_value(value: object, where: str) -> str:
    """One TOML value: strings, numbers, booleans, lists and inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, Sequence):
        items = (toml_value(v, f"{where}[{i}]") for i, v in enumerate(value))
        return "[" + ", ".join(items) + "]"
    if isinstance(value, Mapping):
        pairs = (
            f"{_toml_key(str(k))} = {toml_value(v, f'{where}.{k}')}"
            for k, v in value.items()
            if v is not None
        )
        return "{ " + ", ".join(pairs) + " }"
    raise RenderError(f"{where} = {value!r} has no TOML form; use a string, number, bool or list")


def render_toml(config: Mapping[str, Any]) -> str:
    """The config file: one table per non-empty section; null values are left out."""
    parts = [HEADER]
    for section, table in config.items():
        if table is None or table == {}:
            continue
        if not isinstance(table, Mapping):
            raise RenderError(f"ollama_ops_{section} = {table!r} must be a dict of keys")
        parts.append(f"\n[{_toml_key(section)}]\n")
        for key, value in table.items():
            if value is not None:
                where = f"ollama_ops_{section}.{key}"
                parts.append(f"{_toml_key(str(key))} = {toml_value(value, where)}\n")
    return "".join(parts)


def one_line(stderr: str, stdout: str, rc: int, replace: Mapping[str, str]) -> str:
    """The command's own last line (ollama-ops prints exactly one on error)."""
    lines = [line.strip() for line in (stderr or stdout).splitlines() if line.strip()]
    text = lines[-1] if lines else f"exited {rc} without a message"
    for old, new in replace.items():
        text = text.replace(old, new)
    return text


def generation_of(stdout: str) -> int | None:
    match = re.search(r"\bgeneration (\d+)\b", stdout)
    return int(match.group(1)) if match else None


def written_files(stdout: str) -> list[str]:
    """The files of apply's "KIND PATH" lines."""
    rows = (line.split() for line in stdout.splitlines())
    return [row[1] for row in rows if len(row) == 2 and row[1].startswith("/")]


def _host_path(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/")) if root != "/" else path


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def _install(path: str, text: str) -> None:
    """Write ``text`` at ``path`` atomically, mode 0644."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".ollama-ops.toml.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class Runner:
    """Runs ollama-ops with a fixed environment and turns its failures into one line."""

    def __init__(self, module: AnsibleModule, executable: str, replace: Mapping[str, str]):
        self.module = module
        self.executable = executable
        self.replace = replace

    def __call__(self, *args: str, ok: Sequence[int] = (0,)) -> tuple[int, str]:
        env = {"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "NO_COLOR": "1"}
        rc, out, err = self.module.run_command(
            [self.executable, *args], environ_update=env, check_rc=False
        )
        if rc not in ok:
            self.module.fail_json(msg=one_line(err, out, rc, self.replace), rc=rc)
        return rc, out


def run_module(module: AnsibleModule) -> dict[str, Any]:
    params = module.params
    root, executable = params["root"], params["executable"]
    dest = _host_path(root, params["config_path"])
    try:
        text = render_toml(params["config"])
    except RenderError as exc:
        module.fail_json(msg=str(exc))
    before = _read(dest)
    result: dict[str, Any] = {
        "changed": False,
        "generation": None,
        "config_changed": before != text,
        "config_before": before,
        "changes": [],
    }
    if not os.access(executable, os.X_OK):
        if module.check_mode:
            result.update(changed=True, msg=f"{executable} is not installed yet: no plan to show")
            return result
        module.fail_json(
            msg=f"{executable} is not installed; the role's install tasks put it there"
        )
    work = tempfile.mkdtemp(prefix="ollama-ops-", dir=module.tmpdir)
    facts_file, config_file = os.path.join(work, "facts.json"), os.path.join(work, "config.toml")
    run = Runner(module, executable, {config_file: dest, facts_file: "the facts of this host"})
    _, facts = run("facts", "--json", "--root", root)
    with open(facts_file, "w", encoding="utf-8") as fh:
        fh.write(facts)
    with open(config_file, "w", encoding="utf-8") as fh:
        fh.write(text)
    inputs = ("--root", root, "--facts", facts_file, "--config", config_file)
    rc, diff_text = run("apply", "--dry-run", *inputs, ok=(0, 1))
    pending = rc == 1
    result["ansible_facts"] = {"ollama_ops_facts": json.loads(facts)}
    result["diff"] = []
    if result["config_changed"]:
        result["diff"].append(
            {"before_header": dest, "after_header": dest, "before": before or "", "after": text}
        )
    if pending:
        result["diff"].append({"prepared": diff_text})
    result["changed"] = pending or result["config_changed"]
    if module.check_mode or not result["changed"]:
        return result
    if pending:
        timeout = f"{params['timeout']:g}"
        _, out = run("apply", *inputs, "--timeout", timeout)
        result["generation"] = generation_of(out)
        result["changes"] = written_files(out)
    if result["config_changed"]:
        _install(dest, text)
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "config": {"type": "dict", "default": {}},
            "executable": {"type": "path", "default": "/usr/local/bin/ollama-ops"},
            "config_path": {"type": "path", "default": "/etc/ollama-ops/ollama-ops.toml"},
            "root": {"type": "path", "default": "/"},
            "timeout": {"type": "float", "default": 60.0},
        },
        supports_check_mode=True,
    )
    module.exit_json(**run_module(module))


if __name__ == "__main__":
    main()
