"""The nginx front door over the instances: upstream groups, routes, timeouts, each with a reason.

Pure: the ``[frontdoor]`` config and the planned instances -> FrontDoorPlan,
which ``render.nginx`` writes. nginx open source balances with least_conn
(or a group per model-name prefix), notices a dead instance passively
(max_fails within fail_timeout), must not buffer a token stream, and must
wait longer than a model load for the first byte.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ollama_ops.errors import PlanError
from ollama_ops.model.bind import is_loopback, validate_bind
from ollama_ops.model.config import DeploymentConfig
from ollama_ops.model.deployment import Deployment, Source
from ollama_ops.model.instances import FrontDoorPlan, Row, UpstreamGroup

DEFAULT_GROUP = "ollama_ops"
# Ollama gives up on a model load that stalls this long (OLLAMA_LOAD_TIMEOUT, default 5m).
DEFAULT_LOAD_TIMEOUT = 300
READ_TIMEOUT_FLOOR = 600


def _address(d: Deployment) -> str:
    """Where nginx connects to an instance: its bind address, loopback for a wildcard."""
    host = d.bind_host
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"[{host}]:{d.bind_port}" if ":" in host else f"{host}:{d.bind_port}"


def _instance_name(d: Deployment) -> str:
    return d.unit_name.partition("@")[2].removesuffix(".service")


def _load_timeout(d: Deployment) -> int:
    """OLLAMA_LOAD_TIMEOUT of an instance in seconds (Go duration or seconds)."""
    value = d.value("OLLAMA_LOAD_TIMEOUT")
    if not value:
        return DEFAULT_LOAD_TIMEOUT
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(h|m|s|ms)?", value):
        total += float(number) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "": 1}[unit]
    return int(total) if total > 0 else DEFAULT_LOAD_TIMEOUT


def _members(by_name: dict[str, Deployment], names: Sequence[str], where: str) -> list[Deployment]:
    out = []
    for name in names:
        if name not in by_name:
            raise PlanError(
                f"{where} names {name!r}, which is not an instance; known: {', '.join(by_name)}"
            )
        out.append(by_name[name])
    return out


def _group(name: str, members: Sequence[Deployment]) -> UpstreamGroup:
    return UpstreamGroup(name, tuple((_instance_name(d), _address(d)) for d in members))


def build(
    cfg: DeploymentConfig, instances: Sequence[Deployment], main: Deployment
) -> FrontDoorPlan:
    fd = cfg.frontdoor
    assert fd is not None
    host, port = validate_bind(fd.listen, "frontdoor.listen")
    by_name = {_instance_name(d): d for d in instances}
    taken = {d.bind_port: d.unit_name for d in instances} | {main.bind_port: main.unit_name}
    if port in taken:
        raise PlanError(
            f"frontdoor.listen = {fd.listen!r} uses {taken[port]}'s port {port}; pick another port"
        )
    if not is_loopback(host) and not fd.allowed_networks:
        raise PlanError(
            f"frontdoor.listen = {fd.listen!r} exposes every instance to the network; list the "
            'client networks in frontdoor.allowed_networks (e.g. ["10.0.0.0/8"]) or listen on '
            "127.0.0.1"
        )
    names = fd.instances or tuple(by_name)
    default = _members(by_name, names, "frontdoor.instances")
    groups = [_group(DEFAULT_GROUP, default)]
    routes: list[tuple[str, str]] = []
    for prefix, listed in fd.routes:
        group = f"{DEFAULT_GROUP}_{re.sub(r'[^a-z0-9_]', '_', prefix)}"
        if any(g.name == group for g in groups):
            raise PlanError(f"frontdoor.routes.{prefix} clashes with another route; merge them")
        groups.append(_group(group, _members(by_name, listed, f"frontdoor.routes.{prefix}")))
        routes.append((prefix, group))
    load = max(_load_timeout(d) for d in instances)
    if fd.read_timeout is not None:
        read, read_src, read_why = fd.read_timeout, Source.CONFIG, "frontdoor.read_timeout"
        if read <= load:
            raise PlanError(
                f"frontdoor.read_timeout = {read}s is not longer than a model load "
                f"(OLLAMA_LOAD_TIMEOUT {load}s): slow first tokens would end in 504; raise it"
            )
    else:
        read = max(READ_TIMEOUT_FLOOR, load + 60)
        read_src = Source.RULE
        read_why = (
            f"longer than a model load (OLLAMA_LOAD_TIMEOUT {load}s) plus prompt evaluation: "
            "nginx's 60 s default turns a slow first token into 504"
        )
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    tls = fd.tls_certificate is not None
    c, r = Source.CONFIG, Source.RULE
    rows = [
        Row("listen", listen + (" ssl" if tls else ""), c, "frontdoor.listen"),
        Row(
            "balance",
            "least_conn" + (" in each route's group" if routes else ""),
            c if "frontdoor.balance" in cfg.set_keys else r,
            "fewest open requests wins: a long generation keeps its connection open",
        ),
        *[
            Row(
                f"upstream {g.name}",
                " ".join(a for _n, a in g.servers),
                c if g.name != DEFAULT_GROUP or fd.instances else r,
                "frontdoor.routes"
                if g.name != DEFAULT_GROUP
                else "frontdoor.instances"
                if fd.instances
                else "every instance",
            )
            for g in groups
        ],
        *[
            Row(
                f"route {p}*",
                g,
                c,
                "model names starting so (read from the request body, up to 1 MiB)",
            )
            for p, g in routes
        ],
        Row(
            "max_fails/fail_timeout",
            f"{fd.max_fails}/{fd.fail_timeout}s",
            c if {"frontdoor.max_fails", "frontdoor.fail_timeout"} & cfg.set_keys else r,
            "passive health: an instance failing this often is skipped for fail_timeout; a "
            "refused connection is retried on another instance",
        ),
        Row("proxy_buffering", "off", r, "tokens reach the client as Ollama streams them"),
        Row("proxy_read_timeout", f"{read}s", read_src, read_why),
        Row(
            "proxy_connect_timeout",
            f"{fd.connect_timeout}s",
            c if "frontdoor.connect_timeout" in cfg.set_keys else r,
            "a dead instance is given up quickly and the next one tried",
        ),
        Row(
            "Host",
            "localhost",
            r,
            "Ollama on loopback answers 403 to other Host names; clients may use any name",
        ),
        Row(
            "keepalive",
            "32",
            r,
            "reused connections to the instances: no TCP handshake per request",
        ),
        Row(
            "tls",
            f"{fd.tls_certificate} {fd.tls_certificate_key}" if tls else None,
            c if tls else r,
            "frontdoor.tls_certificate(_key)" if tls else "not set: plain HTTP",
        ),
        Row(
            "allow",
            " ".join(fd.allowed_networks) if fd.allowed_networks else None,
            c if fd.allowed_networks else r,
            "frontdoor.allowed_networks, every other client denied"
            if fd.allowed_networks
            else "no allow-list: it listens on loopback only",
        ),
    ]
    return FrontDoorPlan(
        path=fd.path,
        listen=listen,
        groups=tuple(groups),
        routes=tuple(routes),
        default_group=DEFAULT_GROUP,
        max_fails=fd.max_fails,
        fail_timeout=fd.fail_timeout,
        read_timeout=read,
        connect_timeout=fd.connect_timeout,
        server_name=fd.server_name,
        tls_certificate=fd.tls_certificate,
        tls_certificate_key=fd.tls_certificate_key,
        allowed_networks=fd.allowed_networks,
        rows=tuple(rows),
    )
