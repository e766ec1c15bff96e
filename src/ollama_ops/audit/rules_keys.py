"""Rules on the keys themselves: would the installed systemd honour each line at all?

Sections a service unit does not have, keys unknown to ollama-ops' directive
table (with a did-you-mean), keys in the wrong section (ignored, or honoured
only for compatibility), keys newer than the installed systemd, and legacy
spellings. Everything is judged against ``directives``, the one table of
every directive with the systemd version that added it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator

from ollama_ops.audit.context import Ctx, finding
from ollama_ops.audit.model import Finding, Severity
from ollama_ops.audit.rules_restart import DEFAULT_START_LIMIT_INTERVAL
from ollama_ops.unitfile import directives


def rule_keys(ctx: Ctx) -> Iterator[Finding]:
    """Keys unknown to, misplaced for or too new for the installed systemd."""
    seen_sections: set[tuple[str, str]] = set()
    for a in ctx.u.assignments:
        if a.section.startswith("X-"):
            continue
        if a.section not in ("Unit", "Service", "Install"):
            if (a.path, a.section) not in seen_sections:
                seen_sections.add((a.path, a.section))
                yield finding(
                    "unknown-section",
                    Severity.WARNING,
                    a,
                    None,
                    f"[{a.section}] is not a section of a service unit; systemd ignores it "
                    "and every key in it",
                    "move the keys to [Unit], [Service] or [Install], or name the section "
                    "X-... to keep it as a comment",
                )
            continue
        d = directives.lookup(a.key)
        if d is None:
            near = difflib.get_close_matches(a.key, list(directives.DIRECTIVES), n=1, cutoff=0.8)
            hint = f"; did you mean {near[0]}=?" if near else ""
            yield finding(
                "unknown-key",
                Severity.INFO,
                a,
                None,
                f"{a.key}= is not known to ollama-ops' table, so it is not judged{hint}",
                f"run `systemd-analyze verify {ctx.u.name}` to see whether systemd "
                f"{ctx.version} knows it",
            )
            continue
        since = d.accepted_in(a.section)
        if since is None:
            yield finding(
                "misplaced-key",
                Severity.WARNING,
                a,
                None,
                f'{a.key}= is not valid in [{a.section}]: systemd logs "Unknown key" and '
                "ignores it"
                + (
                    f", so the default ({DEFAULT_START_LIMIT_INTERVAL:g} s window) applies"
                    if a.key == "StartLimitIntervalSec"
                    else ""
                ),
                f"move {a.key}={a.value} to [{d.section}]",
            )
            continue
        if a.section != d.section:
            yield finding(
                "misplaced-key",
                Severity.INFO,
                a,
                None,
                f"{a.key}= in [{a.section}] is still honoured for compatibility, but it "
                f"belongs in [{d.section}]",
                f"move {a.key}={a.value} to [{d.section}]",
            )
        if since > ctx.version:
            yield finding(
                "too-new-for-systemd",
                Severity.WARNING,
                a,
                None,
                f'{a.key}= needs systemd >= {since}; systemd {ctx.version} logs "Unknown '
                'key" and ignores it',
                f"remove {a.key}= (or upgrade systemd to {since} or later)",
            )
        if a.key == "StartLimitInterval":
            yield finding(
                "legacy-name",
                Severity.INFO,
                a,
                None,
                "StartLimitInterval= is the pre-230 spelling of StartLimitIntervalSec=",
                f"write StartLimitIntervalSec={a.value} in [Unit]",
            )
