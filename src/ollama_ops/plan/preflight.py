"""The one preflight that plan, apply and audit all run before they trust a root.

``load_unit`` reads the installed unit exactly as audit reads it (fragment and
drop-ins, strictly: a broken section header is an error, not a line to
drop), so plan and apply refuse what audit refuses. ``preflight`` adds what
apply would find only by writing: write paths that do not exist, which
systemd fails with 226/NAMESPACE. Reads files under the root, writes nothing.
"""

from __future__ import annotations

from pathlib import Path

from ollama_ops.errors import OpsError
from ollama_ops.model.deployment import Deployment
from ollama_ops.unitfile import effective, inroot


def load_unit(root: Path, unit_name: str) -> effective.EffectiveUnit:
    """The installed unit under ``root``, assembled and parsed the way audit reads it."""
    return effective.load_effective(root, unit_name)


def _is_dir(root: Path, path: str) -> bool:
    try:
        return inroot.resolve(root, path).is_dir()
    except OSError:  # a name too long for this host, a loop: not a directory systemd can use
        return False


def preflight(deployment: Deployment, root: Path) -> None:
    """Refuse, before anything is written, a plan that cannot work under ``root``.

    The installed unit must parse (as for audit), and every ReadWritePaths=
    directory must exist: systemd fails the unit with status 226/NAMESPACE
    otherwise, so saying so up front beats a restart and an automatic rollback.
    """
    load_unit(root, deployment.unit_name)
    for setting in deployment.active():
        path = setting.value or ""
        # "-/x" may be missing; a plain path must exist.
        if setting.key == "ReadWritePaths" and path.startswith("/") and not _is_dir(root, path):
            raise OpsError(
                f"ReadWritePaths={setting.value} ({setting.reason}) does not exist under "
                f"{root}; create it, owned by the service user, before applying"
            )
    if deployment.instances is not None:  # each ollama@NAME: its unit parses, its paths exist
        for instance in deployment.instances.instances:
            preflight(instance, root)
