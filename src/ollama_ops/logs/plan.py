"""Log settings of the plan: per-unit journal limits, the probe filter, an optional namespace. Pure.

By default the unit gets its own rate limit (``LogRateLimitIntervalSec=``
and ``LogRateLimitBurst=``, systemd 240+) and ``LogFilterPatterns=``
(systemd 253+) dropping the access lines of successful health probes, so a
chatty Ollama is bounded without touching any other service. The Builder
leaves out what the target systemd cannot read, with the reason.

Options (``[logs]``): ``namespace`` gives Ollama its own journal
(``LogNamespace=``, 245+) with its own size and retention in
``/etc/systemd/journald@NAME.conf``, so it can never evict other services'
lines; ``global_limits`` writes the seed guide's journald limits as a
drop-in, which caps the whole journal (every service), as the guide
actually does.
"""

from __future__ import annotations

from ollama_ops.model.config import LogsConfig
from ollama_ops.model.deployment import Section, Source
from ollama_ops.plan.builder import Builder
from ollama_ops.unitfile import syntax as unit

GLOBAL_DROPIN = "/etc/systemd/journald.conf.d/50-ollama-ops.conf"
# The seed guide's values (its journald.conf.d/ollama.conf), which apply to the whole journal.
GUIDE_LIMITS = (("SystemMaxUse", "2G"), ("SystemMaxFileSize", "100M"), ("MaxRetentionSec", "7day"))

# Gin's access line for a successful, fast probe of `/` or `/api/version`, e.g.
#   [GIN] 2025/01/02 - 15:04:05 | 200 |    1.234567ms |       127.0.0.1 | HEAD     "/"
# Only latencies in ns/µs/ms match (a unit prefix before "s"): a probe that took seconds
# stays in the journal, where `ollama-ops logs` reads it as a hang. PCRE2, as journald
# matches it; \x22 is the double quote (kept out of the unit file's quoting rules).
PROBE_PATTERN = (
    r"^\[GIN\] [0-9/]+ - [0-9:]+ \| 200 \| +[0-9.]+[^ |0-9.]{1,2}s \|[^|]*\| (GET|HEAD) "
    r"+\x22/(api/version)?\x22$"
)


def namespace_conf_path(namespace: str) -> str:
    return f"/etc/systemd/journald@{namespace}.conf"


def settings(b: Builder, cfg: LogsConfig, set_keys: frozenset[str]) -> None:
    """Add the log directives to the unit's drop-in."""

    def source(key: str) -> Source:
        return Source.CONFIG if f"logs.{key}" in set_keys else Source.RULE

    b.add(
        Section.SERVICE,
        "LogRateLimitIntervalSec",
        cfg.rate_limit_interval,
        source("rate_limit_interval"),
        "this unit's own journal rate limit window; other services keep theirs",
    )
    b.add(
        Section.SERVICE,
        "LogRateLimitBurst",
        str(cfg.rate_limit_burst),
        source("rate_limit_burst"),
        f"at most {cfg.rate_limit_burst} lines per {cfg.rate_limit_interval} (journald scales it "
        "up with free disk space): a flood or crash loop cannot crowd out the journal",
    )
    if cfg.filter_probes:
        b.add(
            Section.SERVICE,
            "LogFilterPatterns",
            "~" + PROBE_PATTERN,
            source("filter_probes"),
            "drops the access lines of fast, successful probes of / and /api/version; slow or "
            "failed probes and every other line stay",
        )
    else:
        b.add(
            Section.SERVICE, "LogFilterPatterns", None, Source.CONFIG, "logs.filter_probes = false"
        )
    if cfg.namespace:
        b.add(
            Section.SERVICE,
            "LogNamespace",
            cfg.namespace,
            Source.CONFIG,
            f"own journal, capped at {cfg.namespace_max_use} and {cfg.namespace_retention}: Ollama "
            "cannot evict other services' lines",
        )


def files(cfg: LogsConfig, systemd_version: int) -> dict[str, str]:
    """journald configuration: the namespace's own file, the guide's global drop-in."""
    out: dict[str, str] = {}
    if cfg.namespace and systemd_version >= 245:
        out[namespace_conf_path(cfg.namespace)] = unit.render(
            [
                (
                    "Journal",
                    [
                        ("SystemMaxUse", cfg.namespace_max_use),
                        ("MaxRetentionSec", cfg.namespace_retention),
                    ],
                )
            ],
            header=(
                f"Written by ollama-ops: the journal of namespace {cfg.namespace!r} "
                "(LogNamespace= of the Ollama unit),",
                f"read with `journalctl --namespace={cfg.namespace}`.",
            ),
        )
    if cfg.global_limits:
        out[GLOBAL_DROPIN] = unit.render(
            [("Journal", list(GUIDE_LIMITS))],
            header=(
                "Written by ollama-ops (logs.global_limits): the seed guide's limits.",
                "They cap the WHOLE journal, every service's lines, not only Ollama's.",
            ),
        )
    return out


def notes(cfg: LogsConfig, unit_name: str, systemd_version: int) -> list[str]:
    out: list[str] = []
    if cfg.namespace and systemd_version >= 245:
        name = unit_name.removesuffix(".service")
        out.append(
            f"logs go to journal namespace {cfg.namespace!r}: `journalctl -u {name}` then needs "
            f"`--namespace={cfg.namespace}` (or `--namespace=+{cfg.namespace}` to see systemd's "
            "own lines too); `ollama-ops logs` finds the namespace by itself"
        )
    if cfg.global_limits:
        out.append(
            "logs.global_limits caps the whole journal (all services) at 2G / 7 days, as the "
            "guide does; logs.namespace caps only Ollama's"
        )
    return out
