"""nginx, through the one subprocess runner: test a configuration, test the live one, reload.

``check_candidate`` runs ``nginx -t`` on a front-door file that is not
installed yet, wrapped in a minimal nginx.conf inside a temporary prefix,
so it works as any user and before anything is written. ``check_live`` and
``reload`` act on the installed configuration of the live host.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ollama_ops.errors import CommandError, PlanError
from ollama_ops.host import proc
from ollama_ops.render.nginx import TEMP_PATH_DIRECTIVES, wrapper

if TYPE_CHECKING:
    from ollama_ops.runtime import Runner

INSTALL_HINT = "install it (apt-get install nginx-light, or nginx) or remove [frontdoor]"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _complaint(text: str, prefix: Path | None = None) -> str:
    """nginx's own reason: the first [emerg]/[crit] line, else its last line."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    found = next((x for x in lines if "[emerg]" in x or "[crit]" in x), None) or _last_line(text)
    found = found.split("] ", 1)[1] if found.startswith("nginx: [") else found
    if prefix is not None:
        found = found.replace(f"{prefix}/frontdoor.conf", "front door").replace(str(prefix), "")
    return found


def version(run: Runner = proc.run) -> str:
    """``nginx -v`` ("nginx/1.22.1"); CommandError with the fix when nginx is missing."""
    try:
        done = run(["nginx", "-v"], check=False, timeout=30)
    except CommandError as exc:
        raise CommandError(f"nginx not found for the front door; {INSTALL_HINT}") from exc
    return _last_line(done.stderr + done.stdout).rpartition(": ")[2]


def temp_directives(run: Runner = proc.run) -> list[str]:
    """The *_temp_path directives this nginx build knows (modules compiled out are absent)."""
    done = run(["nginx", "-V"], check=False, timeout=30)
    flags = done.stderr + done.stdout
    return [
        directive
        for directive, name in TEMP_PATH_DIRECTIVES
        if name == "body" or f"--without-http_{name}_module" not in flags
    ]


def check_candidate(text: str, run: Runner = proc.run) -> None:
    """``nginx -t`` on ``text`` (an http-context file); PlanError with nginx's complaint."""
    version(run)
    directives = temp_directives(run)
    prefix = Path(tempfile.mkdtemp(prefix="ollama-ops-nginx-"))
    try:
        candidate = prefix / "frontdoor.conf"
        candidate.write_text(text, encoding="utf-8")
        conf = prefix / "nginx.conf"
        conf.write_text(wrapper(str(candidate), str(prefix), directives), encoding="utf-8")
        done = run(
            ["nginx", "-t", "-q", "-p", f"{prefix}/", "-c", str(conf), "-e", "stderr"],
            check=False,
            timeout=60,
        )
    finally:
        shutil.rmtree(prefix, ignore_errors=True)
    if done.returncode != 0:
        why = _complaint(done.stderr + done.stdout, prefix)
        raise PlanError(f"nginx -t rejects the front door: {why}; fix [frontdoor], nothing written")


def check_live(run: Runner = proc.run) -> str | None:
    """``nginx -t`` on the installed configuration; None when it passes, else why not."""
    done = run(["nginx", "-t", "-q"], check=False, timeout=60)
    if done.returncode == 0:
        return None
    return f"nginx -t fails with the new front door: {_complaint(done.stderr + done.stdout)}"


def reload(run: Runner = proc.run) -> str | None:
    """Reload nginx gracefully (start it when it is not running); None when it worked."""
    done = run(["systemctl", "reload-or-restart", "nginx.service"], check=False, timeout=120)
    if done.returncode == 0:
        return None
    return f"systemctl reload-or-restart nginx.service failed: {_last_line(done.stderr)}"
