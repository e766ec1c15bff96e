"""Rules on the file-system sandbox: can Ollama still write and read what it needs?

The mount table the sandbox builds (ProtectSystem=, ProtectHome=, PrivateTmp=,
Read*/InaccessiblePaths=, the *Directory= settings, BindPaths=) is modelled
closely enough to tell whether $HOME/.ollama, where ``ollama serve`` writes
its key before anything else, and the OLLAMA_MODELS store are writable; and
ProcSubset=pid, which hides the /proc/meminfo Ollama sizes models by.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

from ollama_ops.audit import rules_instances
from ollama_ops.audit.context import Ctx, finding
from ollama_ops.audit.model import Finding, Severity
from ollama_ops.unitfile import syntax as unit

# Read-only trees of each ProtectSystem= mode (systemd.exec(5)).
_READ_ONLY = {
    "strict": ["/"],
    "full": ["/usr", "/boot", "/efi", "/etc"],
    "yes": ["/usr", "/boot", "/efi"],
}
_DIRECTORY_BASES = (
    ("StateDirectory", "/var/lib"),
    ("CacheDirectory", "/var/cache"),
    ("LogsDirectory", "/var/log"),
    ("RuntimeDirectory", "/run"),
)


@dataclass(frozen=True)
class _Mount:
    path: str
    writable: bool
    inaccessible: bool
    cause: unit.Assignment | None
    what: str  # e.g. "ProtectSystem=strict"
    tmpfs: bool = False  # an empty file system: only bind mounts below it show anything
    bind: bool = False

    @property
    def effect(self) -> str:
        return "inaccessible" if self.inaccessible else "read-only"


def _within(path: str, prefix: str) -> bool:
    p, q = PurePosixPath(path), PurePosixPath(prefix)
    return p == q or q in p.parents


def _strip_path(spec: str) -> str:
    return spec.lstrip("-+")


def _each_word(ctx: Ctx, key: str) -> Iterator[tuple[unit.Assignment, str]]:
    for a in ctx.values(key):
        for word in a.value.split():
            yield a, word


def _protected(ctx: Ctx, key: str) -> tuple[str, unit.Assignment | None, str]:
    """ProtectSystem=/ProtectHome=: the mode, the assignment behind it, and how to name it."""
    mode, a = ctx.protection(key)
    if a is not None:
        return mode, a, f"{key}={mode}"
    return mode, ctx.last("DynamicUser"), f"DynamicUser=yes (implies {key}={mode})"


def _mounts(ctx: Ctx) -> list[_Mount]:
    out: list[_Mount] = []
    mode, cause, what = _protected(ctx, "ProtectSystem")
    for path in _READ_ONLY.get(mode, []):
        out.append(_Mount(path, False, False, cause, what))
    if mode == "strict":
        for api in ("/dev", "/proc", "/sys"):
            out.append(_Mount(api, True, False, None, "API file systems"))
    if ctx.flag("PrivateTmp") or ctx.dynamic:
        for tmp in ("/tmp", "/var/tmp"):
            out.append(_Mount(tmp, True, False, ctx.last("PrivateTmp"), "PrivateTmp=yes"))
    hmode, hcause, hwhat = _protected(ctx, "ProtectHome")
    if hmode != "no":
        for path in ("/home", "/root", "/run/user"):
            out.append(_Mount(path, False, hmode == "yes", hcause, hwhat, tmpfs=hmode == "tmpfs"))
    for key, writable, hidden in (
        ("ReadWritePaths", True, False),
        ("ReadOnlyPaths", False, False),
        ("InaccessiblePaths", False, True),
    ):
        for b, word in _each_word(ctx, key):
            out.append(_Mount(_strip_path(word), writable, hidden, b, f"{key}={word}"))
    for key, base in _DIRECTORY_BASES:
        for b, word in _each_word(ctx, key):
            name = word.split(":", 1)[0]
            out.append(_Mount(f"{base}/{name}", True, False, b, f"{key}={word}"))
    for b, word in _each_word(ctx, "BindPaths"):
        parts = _strip_path(word).split(":")
        dest = parts[1] if len(parts) > 1 and parts[1].startswith("/") else parts[0]
        out.append(_Mount(dest, True, False, b, f"BindPaths={word}", bind=True))
    return out


def _writable(ctx: Ctx, path: str) -> _Mount | None:
    """None if the sandbox lets the service write ``path``, else the mount that stops it."""
    mounts = _mounts(ctx)
    # systemd drops every mount below an inaccessible one (namespace.c drop_inaccessible).
    hidden = [m for m in mounts if m.inaccessible and _within(path, m.path)]
    if hidden:
        return min(hidden, key=lambda m: len(m.path))
    covering = [m for m in mounts if _within(path, m.path)]
    for tmpfs in [m for m in covering if m.tmpfs]:
        # Below an empty tmpfs only bind mounts bring a directory back.
        covering = [
            m for m in covering if m.bind or not (_within(m.path, tmpfs.path) and m is not tmpfs)
        ]
    if not covering:
        return None
    depth = max(len(PurePosixPath(m.path).parts) for m in covering)
    deepest = [m for m in covering if len(PurePosixPath(m.path).parts) == depth]
    blocking = [m for m in deepest if not m.writable]
    return blocking[0] if blocking else None


def rule_paths(ctx: Ctx) -> Iterator[Finding]:
    """$HOME/.ollama (the key) and the model store must be writable."""
    home, source = ctx.home()
    if home is None:
        yield finding(
            "home-unknown",
            Severity.INFO,
            ctx.last("User"),
            None,
            f"cannot tell the service's $HOME: {source}",
            "pass --facts from the host, or set Environment=HOME=... in the unit",
        )
    else:
        key_dir = f"{home.rstrip('/')}/.ollama"
        stop = _writable(ctx, key_dir)
        if stop is not None:
            loops = ctx.restarts
            yield finding(
                "home-not-writable",
                Severity.CRITICAL if loops else Severity.ERROR,
                stop.cause,
                stop.what.split("=", 1)[0],
                f"{stop.what} makes {key_dir} {stop.effect} ($HOME={home}: {source}): "
                f"`ollama serve` cannot write {key_dir}/id_ed25519 and exits 1"
                + (f", and Restart={ctx.value('Restart')} loops" if loops else ""),
                f"add ReadWritePaths={home} (or set Environment=HOME=/var/lib/ollama with "
                "StateDirectory=ollama)",
            )
    models_var = ctx.env.get("OLLAMA_MODELS")
    if models_var is not None and models_var.value.startswith("/"):
        stop = _writable(ctx, models_var.value)
        if stop is not None:
            by_design = rules_instances.reads_shared_store(ctx, stop.what)
            yield finding(
                "models-not-writable",
                Severity.INFO if by_design else Severity.ERROR,
                models_var,
                None,
                f"OLLAMA_MODELS={models_var.value} is {stop.effect} under {stop.what}: pulls "
                "and creates fail, and the models may be unreadable",
                f"add ReadWritePaths={models_var.value} (or keep the models under $HOME or a "
                "StateDirectory=)",
            )


def rule_proc(ctx: Ctx) -> Iterator[Finding]:
    a = ctx.last("ProcSubset")
    if a is not None and a.value.strip() == "pid":
        yield finding(
            "proc-subset-pid",
            Severity.ERROR,
            a,
            None,
            "ProcSubset=pid hides /proc/meminfo, which Ollama reads to size models to memory",
            "set ProcSubset=all (ProtectProc=invisible still hides other processes)",
        )
