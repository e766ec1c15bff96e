"""Values of the ``[logs]`` config table: systemd time spans, journal sizes, a namespace name."""

from __future__ import annotations

import re

from ollama_ops.errors import ConfigError

# systemd.time(7) spans, as written in unit files and journald.conf: "30s", "1h 30min", "7day".
_SPAN_UNITS = (
    "usec|us|msec|ms|seconds|second|sec|s|minutes|minute|min|m|hours|hour|hr|h|"
    "days|day|d|weeks|week|w|months|month|M|years|year|y"
)
_SPAN_RE = re.compile(rf"^(\d+(?:\.\d+)?\s*(?:{_SPAN_UNITS})\s*)+$")
_JOURNAL_SIZE_RE = re.compile(r"^\d+(\.\d+)?[KMGT]?$")
# A journal namespace names a directory and the systemd-journald@NAME.service instance.
_NAMESPACE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def parse_span(value: object, where: str) -> str:
    if not isinstance(value, str) or not _SPAN_RE.match(value.strip()):
        raise ConfigError(
            f'{where} = {value!r} is not a systemd time span; write e.g. "30s", "5min", "14day"'
        )
    return value.strip()


def parse_burst(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1_000_000:
        raise ConfigError(
            f"{where} = {value!r} must be a whole number of messages from 0 (no limit) to 1000000"
        )
    return value


def parse_journal_size(value: object, where: str) -> str:
    text = value.strip().upper() if isinstance(value, str) else ""
    text = text.removesuffix("B").removesuffix("I")  # "2GiB" / "2GB" -> "2G"
    if not _JOURNAL_SIZE_RE.match(text):
        raise ConfigError(f'{where} = {value!r} is not a journal size; write e.g. "2G" or "500M"')
    return text


def parse_namespace(value: object, where: str) -> str | None:
    """A journal namespace for the service ("ollama"), or "" / "none" for the main journal."""
    if not isinstance(value, str):
        raise ConfigError(f'{where} = {value!r} must be a name such as "ollama", or "none"')
    text = value.strip()
    if text in ("", "none"):
        return None
    if not _NAMESPACE_RE.match(text):
        raise ConfigError(
            f"{where} = {value!r} is not a journal namespace; use lower-case letters, digits, "
            '_ and - (e.g. "ollama")'
        )
    return text


def parse_flag(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} = {value!r} must be true or false")
    return value
