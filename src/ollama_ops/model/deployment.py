"""The Deployment: every setting decided for a host, with its source and reason.

Plain frozen data, produced by ``plan`` and consumed by ``render``, ``apply``
and the reports. A setting whose value is None was deliberately left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ollama_ops.health.unitplan import WatchPlan
    from ollama_ops.model.instances import InstancesPlan

DROPIN_NAME = "50-ollama-ops.conf"
MODULES_LOAD_PATH = "/etc/modules-load.d/ollama-ops-nvidia.conf"


class Source(str, Enum):
    RULE = "rule"
    CONFIG = "config"
    HARDENING = "hardening"


class Section(str, Enum):
    UNIT = "Unit"
    SERVICE = "Service"
    ENV = "Environment"  # rendered as Environment= lines in [Service]


@dataclass(frozen=True)
class Setting:
    section: Section
    key: str
    value: str | None  # None: deliberately left out; the reason says why
    source: Source
    reason: str


@dataclass(frozen=True)
class Deployment:
    unit_name: str
    systemd_version: int
    settings: tuple[Setting, ...]
    write_base_unit: bool  # no unit installed: write a whole one (never edit a packaged unit)
    base_unit: tuple[tuple[Section, str, str], ...]  # only used when write_base_unit
    modules_load: tuple[str, ...]  # kernel modules to load before the unit (NVIDIA)
    bind_host: str
    bind_port: int
    notes: tuple[str, ...] = ()
    watch: WatchPlan | None = None  # health: the supervisor's (or the check timer's) units
    instances: InstancesPlan | None = None  # ollama@.service, its instances, the front door
    # Other files the plan writes beside the unit (journald config), as (path, text).
    files: tuple[tuple[str, str], ...] = ()

    @property
    def dropin_path(self) -> str:
        return f"/etc/systemd/system/{self.unit_name}.d/{DROPIN_NAME}"

    @property
    def unit_path(self) -> str:
        return f"/etc/systemd/system/{self.unit_name}"

    def active(self, section: Section | None = None) -> list[Setting]:
        return [
            s
            for s in self.settings
            if s.value is not None and (section is None or s.section is section)
        ]

    def value(self, key: str) -> str | None:
        """Last written value of a key (any section); None when left out."""
        found = [s.value for s in self.settings if s.key == key and s.value is not None]
        return found[-1] if found else None

    @property
    def api_url(self) -> str:
        return api_url(self.bind_host, self.bind_port)


def api_url(bind_host: str, port: int) -> str:
    """The URL local clients (apply, health checks) reach a server bound to bind_host:port at."""
    host = bind_host
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"
