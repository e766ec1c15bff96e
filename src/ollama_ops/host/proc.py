"""The one subprocess wrapper of the package.

argv lists only (never a shell), a fixed C locale so output parses the same
everywhere, stdin from /dev/null, and failures raised as CommandError with
the command and the tail of its stderr.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ollama_ops.errors import CommandError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float | None = 60.0,
    env: Mapping[str, str] | None = None,
    input_text: str | None = None,
) -> Completed:
    """Run ``argv`` and capture its output as text.

    Raises CommandError when the program is missing, times out, or (with
    ``check``) exits non-zero.
    """
    full_env = dict(os.environ)
    full_env.update({"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "SYSTEMD_PAGER": "", "PAGER": "cat"})
    if env:
        full_env.update(env)
    log.debug("+ %s", shlex.join(argv))
    try:
        proc = subprocess.run(
            list(argv),
            input=input_text,
            stdin=None if input_text is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            check=False,
        )
    except FileNotFoundError as exc:
        raise CommandError(f"{argv[0]}: command not found; install it or put it on PATH") from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandError(f"{shlex.join(argv)}: no answer after {timeout:g}s") from exc
    done = Completed(tuple(argv), proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise CommandError(f"{shlex.join(argv)} exited {proc.returncode}: {tail[0]}")
    return done
