"""The target Pythons an export carries wheels for: versions, machines, pip's tags.

No third-party imports: the CLI parses its options with these on every start.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

from ollama_ops.errors import OpsError

DEFAULT_PYTHONS = ("3.10", "3.11", "3.12", "3.13")
GLIBC_MINOR = 28  # manylinux_2_28: Debian 10+, Ubuntu 18.10+, RHEL 8+


@dataclass(frozen=True)
class Target:
    python: str  # "3.11"
    arch: str  # "x86_64"

    @property
    def platforms(self) -> tuple[str, ...]:
        tags = [f"manylinux_2_{m}_{self.arch}" for m in range(GLIBC_MINOR, 4, -1)]
        legacy = ("manylinux2014", "manylinux2010", "manylinux1")
        return (*tags, *(f"{name}_{self.arch}" for name in legacy))

    def pip_args(self) -> list[str]:
        args = ["--only-binary=:all:", "--python-version", self.python, "--implementation", "cp"]
        for tag in self.platforms:
            args += ["--platform", tag]
        return args

    def environment(self) -> dict[str, str]:
        """PEP 508 marker variables of a CPython ``python`` on Linux ``arch``."""
        return {
            "python_version": self.python,
            "python_full_version": f"{self.python}.0",
            "implementation_name": "cpython",
            "implementation_version": f"{self.python}.0",
            "platform_python_implementation": "CPython",
            "sys_platform": "linux",
            "os_name": "posix",
            "platform_system": "Linux",
            "platform_machine": self.arch,
            "platform_release": "",
            "platform_version": "",
            "extra": "",
        }


def parse_python(text: str) -> str:
    """A target Python as MAJOR.MINOR, 3.10 or newer (what ollama-ops runs on)."""
    try:
        major, minor = (int(part) for part in text.split("."))
    except ValueError:
        major, minor = 0, 0
    if (major, minor) < (3, 10):
        raise OpsError(f"--python {text!r}: write a version such as 3.11 (3.10 or newer)")
    return f"{major}.{minor}"


def default_arch() -> str:
    return platform.machine() or "x86_64"
