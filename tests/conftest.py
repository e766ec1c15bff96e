from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import INSTALLER_UNIT


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A root directory holding the official installer's unit, as after `install.sh`."""
    unit = tmp_path / "etc/systemd/system/ollama.service"
    unit.parent.mkdir(parents=True)
    unit.write_text(INSTALLER_UNIT)
    (tmp_path / "usr/share/ollama").mkdir(parents=True)  # the installer's `useradd -m`
    return tmp_path
