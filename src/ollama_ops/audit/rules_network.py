"""Rules on the network: can clients and the runner reach the API, and can strangers?

OLLAMA_HOST is read the way Ollama binds it. A bind beyond loopback with no
IPAddressDeny=any + IPAddressAllow= allow-list exposes the unauthenticated
API; an allow-list without localhost cuts the server off from its runner on
127.0.0.1; PrivateNetwork=yes and RestrictAddressFamilies= without AF_INET
(or AF_INET6 for an IPv6 bind) make Ollama unreachable or unable to listen.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from ollama_ops.audit.context import Ctx, finding
from ollama_ops.audit.model import Finding, Severity
from ollama_ops.model.bind import is_loopback, split_bind

_ANY = {"any", "0.0.0.0/0", "::/0"}
_LOOPBACK = {"localhost", "127.0.0.1", "127.0.0.0/8", "::1", "::1/128", "127.0.0.1/32"}


def _bind_host(value: str) -> str:
    """The host part Ollama binds for an OLLAMA_HOST value (envconfig.Host)."""
    host, port, _bracketed = split_bind(value)
    if not host:
        # ":11434" binds every interface; an empty value is Ollama's default, loopback.
        return "" if port is not None else "127.0.0.1"
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def rule_network(ctx: Ctx) -> Iterator[Finding]:
    deny = ctx.words("IPAddressDeny")
    allow = ctx.words("IPAddressAllow")
    deny_all = any(w in _ANY for w in deny) or {"0.0.0.0/0", "::/0"} <= set(deny)
    private_net = ctx.enabled("PrivateNetwork")
    if private_net is not None:
        yield finding(
            "private-network",
            Severity.ERROR,
            private_net,
            None,
            "PrivateNetwork=yes gives Ollama its own empty network: no client, not even on "
            "this host, can reach the API",
            "remove PrivateNetwork= and limit clients with IPAddressDeny=any plus IPAddressAllow=",
        )
        return
    # An allow-list: every address denied, and not all of them allowed back.
    allowlisted = deny_all and not any(w in _ANY for w in allow)
    if deny_all and not any(w in _LOOPBACK for w in allow):
        yield finding(
            "ip-deny-loopback",
            Severity.ERROR,
            ctx.values("IPAddressDeny")[-1],
            "IPAddressDeny",
            "IPAddressDeny=any without localhost in IPAddressAllow=: the server cannot talk "
            "to its runner on 127.0.0.1, so no model loads",
            "add IPAddressAllow=localhost",
        )
    if allowlisted:
        yield finding(
            "ip-deny-blocks-pull",
            Severity.INFO,
            ctx.values("IPAddressDeny")[-1],
            "IPAddressDeny",
            "IPAddressDeny=any also blocks `ollama pull` from the registry",
            "use `ollama-ops pull MODEL` (opens egress only while it pulls), or [models] in the config",
        )
    host_var = ctx.env.get("OLLAMA_HOST")
    if host_var is None:
        return
    host = _bind_host(host_var.value)
    if is_loopback(host):
        return
    restricting = [w for w in allow if w not in _ANY and w not in _LOOPBACK]
    shown = host or "every address"
    if allowlisted and not restricting:
        yield finding(
            "bind-unreachable",
            Severity.INFO,
            host_var,
            None,
            f"OLLAMA_HOST={host_var.value} binds {shown}, but IPAddressAllow= lets only "
            "loopback clients in",
            "list the client networks in IPAddressAllow=, or bind 127.0.0.1",
        )
        return
    if allowlisted:
        return
    firewallish = bool(deny or allow) or any(
        ctx.values(k)
        for k in ("IPIngressFilterPath", "RestrictNetworkInterfaces", "SocketBindAllow")
    )
    yield finding(
        "api-exposed",
        Severity.ERROR if firewallish else Severity.CRITICAL,
        host_var,
        None,
        f"OLLAMA_HOST={host_var.value} serves the unauthenticated API on {shown} with no "
        "IPAddressDeny=any + IPAddressAllow= allow-list"
        + ("" if firewallish else ", and no other network restriction in the unit"),
        "add IPAddressDeny=any and IPAddressAllow=localhost <client networks> (e.g. "
        "10.0.0.0/8), or bind OLLAMA_HOST=127.0.0.1:11434 behind a reverse proxy",
    )


def _families(ctx: Ctx) -> set[str] | None:
    """The address families allowed by RestrictAddressFamilies=; None: unrestricted."""
    mode: str | None = None
    fams: set[str] = set()
    for a in ctx.values("RestrictAddressFamilies"):
        value = a.value.strip()
        if value == "none":
            mode, fams = "allow", set()
            continue
        invert = value.startswith("~")
        names = set(value.lstrip("~").split())
        if mode is None:
            mode, fams = ("deny" if invert else "allow"), names
        elif mode == "allow":
            fams = fams - names if invert else fams | names
        else:
            fams = fams | names if invert else fams - names
    if mode is None:
        return None
    if mode == "deny":
        return {f for f in ("AF_INET", "AF_INET6", "AF_UNIX") if f not in fams}
    return fams


def rule_address_families(ctx: Ctx) -> Iterator[Finding]:
    fams = _families(ctx)
    if fams is None:
        return
    where = ctx.values("RestrictAddressFamilies")[-1]
    host_var = ctx.env.get("OLLAMA_HOST")
    host = _bind_host(host_var.value) if host_var is not None else "127.0.0.1"
    if "AF_INET" not in fams:
        yield finding(
            "address-families",
            Severity.ERROR,
            where,
            None,
            "RestrictAddressFamilies= does not allow AF_INET: Ollama cannot listen on IPv4 or "
            "reach its runner on 127.0.0.1",
            "allow AF_INET AF_INET6 AF_UNIX",
        )
    if "AF_INET6" not in fams:
        v6 = ":" in host
        yield finding(
            "address-families",
            Severity.ERROR if v6 else Severity.INFO,
            where,
            None,
            "RestrictAddressFamilies= does not allow AF_INET6: "
            + (f"Ollama cannot bind {host}" if v6 else "IPv6 clients and binds fail"),
            "allow AF_INET AF_INET6 AF_UNIX",
        )
