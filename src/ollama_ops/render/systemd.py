"""Deployment -> the files to install, as {absolute path: text}. Pure."""

from __future__ import annotations

from collections.abc import Sequence

from ollama_ops.health.unitplan import render_watch
from ollama_ops.model.deployment import MODULES_LOAD_PATH, Deployment, Section
from ollama_ops.unitfile import syntax as unit

HEADER = (
    "Written by ollama-ops; `ollama-ops plan` explains every value.",
    "Local changes belong in a later drop-in (e.g. override.conf), which wins over this one.",
)


def _entries(pairs: Sequence[tuple[Section, str, str]], section: Section) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for sec, key, value in pairs:
        if sec is Section.ENV and section is Section.SERVICE:
            out.append(("Environment", unit.quote_environment(key, value)))
        elif sec is section:
            out.append((key, unit.escape_specifiers(value)))
    return out


def _sections(pairs: Sequence[tuple[Section, str, str]], with_install: bool) -> list[unit.Section]:
    sections: list[unit.Section] = []
    for section in (Section.UNIT, Section.SERVICE):
        entries = _entries(pairs, section)
        if entries:
            sections.append((section.value, entries))
    if with_install:
        sections.append(("Install", [("WantedBy", "multi-user.target")]))
    return sections


def render_dropin(deployment: Deployment) -> str:
    pairs = [(s.section, s.key, s.value) for s in deployment.active() if s.value is not None]
    return unit.render(_sections(pairs, with_install=False), header=HEADER)


def render_base_unit(deployment: Deployment) -> str:
    return unit.render(
        _sections(list(deployment.base_unit), with_install=True),
        header=("Written by ollama-ops because no ollama unit was installed.",),
    )


def render_modules_load(deployment: Deployment) -> str:
    lines = ["# Written by ollama-ops: load the GPU driver at boot, before ollama.service."]
    lines += list(deployment.modules_load)
    return "\n".join(lines) + "\n"


def render(deployment: Deployment) -> dict[str, str]:
    """Every file ollama-ops owns for this deployment, keyed by absolute path."""
    files = {deployment.dropin_path: render_dropin(deployment)}
    if deployment.write_base_unit:
        files[deployment.unit_path] = render_base_unit(deployment)
    if deployment.modules_load:
        files[MODULES_LOAD_PATH] = render_modules_load(deployment)
    files.update(dict(deployment.files))
    if deployment.instances is not None:
        from ollama_ops.render import instances

        files.update(instances.render(deployment.instances))
    if deployment.watch is not None:  # health: [watch] enabled
        files.update(render_watch(deployment.watch, deployment.unit_name))
    return files
