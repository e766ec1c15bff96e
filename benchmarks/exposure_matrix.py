"""Exposure scores (systemd-analyze security, 0 best .. 10 worst) on systemd 247, 252 and 257.

For each Debian suite it boots a container (tests/systemd/nspawn.py), then
scores, with that version's own systemd-analyze: the official installer's
unit, the seed guide's hardened drop-in on top of it, and ollama-ops' drop-in
for a CPU-only, an NVIDIA and an AMD host (the fixtures in tests/fixtures/hosts,
planned for that systemd version). Needs root, systemd-nspawn and debootstrap.

Two columns, because they differ: "loaded" asks the container's running
systemd about the loaded unit (what the unit really gets), "offline" scores
the unit files with ``--offline=true`` as ``ollama-ops audit`` does. Offline
scoring cannot see some runtime facts (e.g. that the installer's user is not
root), so the same files can score a little differently.

    .venv/bin/python benchmarks/exposure_matrix.py
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.systemd.nspawn import INSTALLER_UNIT, SUITES, Container  # noqa: E402

from ollama_ops.model import config  # noqa: E402
from ollama_ops.model import facts as facts_mod  # noqa: E402
from ollama_ops.plan import compose as plan  # noqa: E402
from ollama_ops.render import systemd as render  # noqa: E402

DROPIN_DIR = "/etc/systemd/system/ollama.service.d"
HOSTS = ("cpu-small", "nvidia-1x24g", "amd-rocm")


def _exposure(c: Container, *options: str) -> float:
    text = c.exec(
        ["systemd-analyze", "security", "--no-pager", *options, "ollama.service"], check=False
    ).stdout
    match = re.search(r"Overall exposure level for ollama.service: ([0-9.]+)", text)
    return float(match.group(1)) if match else float("nan")


def score(c: Container) -> tuple[float, float]:
    """(loaded, offline) exposure of ollama.service as the container has it now."""
    c.systemctl("daemon-reload")
    return _exposure(c), _exposure(c, "--offline=true")


def main() -> int:
    guide = (REPO / "tests/fixtures/audit/guide-hardened.conf").read_text()
    rows: list[tuple[str, int, str, tuple[float, float]]] = []
    for suite in ("bullseye", "bookworm", "trixie"):
        version = SUITES[suite].systemd
        with Container(suite) as c:
            c.write_file("/usr/local/bin/ollama", "#!/bin/sh\nexec sleep infinity\n", mode=0o755)
            c.write_file("/etc/systemd/system/ollama.service", INSTALLER_UNIT)
            rows.append((suite, version, "installer unit", score(c)))
            c.write_file(f"{DROPIN_DIR}/hardened.conf", guide)
            rows.append((suite, version, "installer + seed guide drop-in", score(c)))
            c.exec(["rm", f"{DROPIN_DIR}/hardened.conf"])
            for name in HOSTS:
                text = (REPO / f"tests/fixtures/hosts/{name}.json").read_text()
                host = dataclasses.replace(facts_mod.loads(text, name), systemd_version=version)
                host = dataclasses.replace(
                    host,
                    ollama=dataclasses.replace(
                        host.ollama, unit_path="/etc/systemd/system/ollama.service"
                    ),
                )
                deployment = plan.build(host, config.DeploymentConfig())
                c.write_file(deployment.dropin_path, render.render_dropin(deployment))
                rows.append((suite, version, f"ollama-ops drop-in, {name}", score(c)))
    print("exposure 0 (best) .. 10; loaded: the running systemd's view of the loaded unit;")
    print("offline: --offline=true on the same files, as `ollama-ops audit` reports it")
    print(f"{'suite':<9} {'systemd':>7}  {'configuration':<40} {'loaded':>6} {'offline':>7}")
    for suite, version, what, (loaded, offline) in rows:
        shown = "n/a" if math.isnan(offline) else f"{offline:.1f}"  # no --offline
        print(f"{suite:<9} {version:>7}  {what:<40} {loaded:>6.1f} {shown:>7}")
    print("n/a: this systemd-analyze has no --offline (it came in systemd 250)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
