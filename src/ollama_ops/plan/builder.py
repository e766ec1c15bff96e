"""Collects settings, leaving out what the target systemd cannot read, with the reason."""

from __future__ import annotations

from collections.abc import Iterable

from ollama_ops.model.deployment import Section, Setting, Source
from ollama_ops.unitfile import directives


class Builder:
    """Collects settings, filtering what the target systemd cannot read."""

    def __init__(self, version: int, relax: Iterable[str]) -> None:
        self.version = version
        self.relax = set(relax)
        self.settings: list[Setting] = []

    def add(
        self, section: Section, key: str, value: str | None, source: Source, reason: str
    ) -> None:
        if value is not None and section is not Section.ENV:
            known = directives.lookup(key)
            if known is not None and not directives.supported(key, self.version):
                value, reason = (
                    None,
                    f"left out: needs systemd >= {known.since}, target has {self.version}",
                )
            elif source is Source.HARDENING and key in self.relax:
                value, source, reason = (
                    None,
                    Source.CONFIG,
                    "left at systemd's default: hardening.relax",
                )
        self.settings.append(Setting(section, key, value, source, reason))
