"""OLLAMA_HOST-style bind addresses: one reading for the config and the audit.

``split_bind`` reads a value the way Ollama's envconfig.Host does (scheme and
path dropped, ``[v6]:port``, ``host:port``, a bare host); ``validate_bind``
adds the checks a value we write must pass; ``is_loopback`` is lenient (a name
other than localhost is not loopback).
"""

from __future__ import annotations

import ipaddress
import re

from ollama_ops.errors import ConfigError

DEFAULT_PORT = 11434


def split_bind(value: str) -> tuple[str, str | None, bool]:
    """(host, port text or None, bracketed) of an OLLAMA_HOST value, without judging them."""
    text = value.strip().strip("\"'")
    _scheme, sep, rest = text.partition("://")
    hostport = (rest if sep else text).split("/", 1)[0]
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            return hostport[1:], None, True
        after = hostport[end + 1 :]
        return hostport[1:end], (after[1:] if after.startswith(":") else None), True
    if hostport.count(":") == 1:
        host, port = hostport.split(":")
        return host, port, False
    return hostport, None, False


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_bind(value: str, where: str = "service.bind") -> tuple[str, int]:
    """Split a bind address we will write into (host, port), refusing anything doubtful.

    The host comes back in its canonical spelling ("0:0::1" -> "::1"), since it is
    also written into IPAddressAllow=. An IPv6 zone id ("fe80::1%eth0") is refused:
    IPAddressAllow= has no zones, and Python's ipaddress accepts any text after '%'.
    """
    text = value.strip()
    host, port_text, bracketed = split_bind(text)
    if bracketed and "]" not in text:
        raise ConfigError(f"{where} = {value!r}: unclosed '['; write e.g. \"[::1]:11434\"")
    if bracketed and text.split("]", 1)[1] and port_text is None:
        raise ConfigError(f"{where} = {value!r}: expected ':port' after ']'")
    host = host or "0.0.0.0"
    port_text = str(DEFAULT_PORT) if port_text is None else port_text
    if not re.fullmatch(r"[0-9]{1,5}", port_text):
        raise ConfigError(f"{where} = {value!r}: port {port_text!r} is not a number")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ConfigError(f"{where} = {value!r}: port {port} is out of range 1-65535")
    if "%" in host:
        raise ConfigError(
            f"{where} = {value!r}: IPv6 zone ids ('%' and an interface) are not supported, "
            "since IPAddressAllow= cannot express them; bind to a global address or 0.0.0.0"
        )
    if host == "localhost":
        return host, port
    if not re.fullmatch(r"[0-9A-Fa-f:.]+", host):
        raise ConfigError(
            f"{where} = {value!r}: {host!r} is not an IP address; bind to an address such "
            "as 127.0.0.1, 0.0.0.0 or a NIC's IP"
        )
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError as exc:
        raise ConfigError(
            f"{where} = {value!r}: {host!r} is not an IP address; bind to an address such "
            "as 127.0.0.1, 0.0.0.0 or a NIC's IP"
        ) from exc
