"""FrontDoorPlan -> the nginx configuration of the front door, and the wrapper nginx -t reads. Pure.

The file is an http-context snippet (Debian's nginx.conf includes
/etc/nginx/conf.d/*.conf inside ``http {}``). Every value in it was
validated by the config parser (addresses, plain paths, host names), so
nothing here can escape its directive.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ollama_ops.model.instances import FrontDoorPlan

HEADER = (
    "# Written by ollama-ops; `ollama-ops plan` explains every value.",
    "# Local changes are overwritten by the next apply: change [frontdoor] in the config.",
)
ROUTE_VAR = "$ollama_ops_route"
BODY_LOCATION = "/_ollama_ops_read_body"
# nginx modules whose compiled-in temporary directory nginx -t creates; a test run as
# non-root needs every one moved under its own prefix.
TEMP_PATH_DIRECTIVES = (
    ("client_body_temp_path", "body"),
    ("proxy_temp_path", "proxy"),
    ("fastcgi_temp_path", "fastcgi"),
    ("uwsgi_temp_path", "uwsgi"),
    ("scgi_temp_path", "scgi"),
)


def _upstreams(plan: FrontDoorPlan) -> list[str]:
    out = []
    for group in plan.groups:
        out.append(f"upstream {group.name} {{")
        out.append("    least_conn;")
        for name, address in group.servers:
            out.append(
                f"    server {address} max_fails={plan.max_fails} "
                f"fail_timeout={plan.fail_timeout}s;  # ollama@{name}"
            )
        out.append("    keepalive 32;")
        out.append("}")
        out.append("")
    return out


def _route_map(plan: FrontDoorPlan) -> list[str]:
    if not plan.routes:
        return []
    out = [f"map $request_body {ROUTE_VAR} {{", f"    default {plan.default_group};"]
    for prefix, group in plan.routes:
        pattern = re.sub(r"([.+-])", r"\\\1", prefix)
        out.append(f'    "~\\"model\\"\\s*:\\s*\\"{pattern}" {group};')
    out += ["}", ""]
    return out


def _server(plan: FrontDoorPlan, cert: str | None, key: str | None) -> list[str]:
    tls = cert is not None and key is not None
    out = ["server {", f"    listen {plan.listen}{' ssl' if tls else ''};"]
    out.append(f"    server_name {plan.server_name};")
    if tls:
        out += [
            f"    ssl_certificate {cert};",
            f"    ssl_certificate_key {key};",
            "    ssl_protocols TLSv1.2 TLSv1.3;",
        ]
    if plan.allowed_networks:
        out += [f"    allow {net};" for net in plan.allowed_networks]
        out.append("    deny all;")
    out += [
        "    client_max_body_size 0;  # model blobs (ollama create) are gigabytes",
        "",
        "    location / {",
    ]
    if plan.routes:
        out += [
            "        # The model name is in the JSON body: read it first (up to 1 MiB) so the",
            f"        # map above can route on it; larger bodies go to {plan.default_group}.",
            f"        mirror {BODY_LOCATION};",
            "        mirror_request_body on;",
            "        client_body_buffer_size 1m;",
            "        client_body_in_single_buffer on;",
            f"        proxy_pass http://{ROUTE_VAR};",
        ]
    else:
        out.append(f"        proxy_pass http://{plan.default_group};")
    out += [
        "        proxy_http_version 1.1;",
        '        proxy_set_header Connection "";',
        "        proxy_set_header Host localhost;",
        "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "        proxy_set_header X-Forwarded-Proto $scheme;",
        "        proxy_buffering off;",
        "        proxy_cache off;",
        f"        proxy_read_timeout {plan.read_timeout}s;",
        f"        proxy_send_timeout {plan.read_timeout}s;",
        f"        proxy_connect_timeout {plan.connect_timeout}s;",
        "        proxy_next_upstream error timeout;",
        "    }",
    ]
    if plan.routes:
        out += [
            "",
            f"    location = {BODY_LOCATION} {{",
            "        internal;",
            "        return 204;",
            "    }",
        ]
    out.append("}")
    return out


def render(plan: FrontDoorPlan, path_prefix: str = "") -> str:
    """The front door's nginx file; ``path_prefix`` moves TLS files (for testing under --root)."""
    cert = path_prefix + plan.tls_certificate if plan.tls_certificate else None
    key = path_prefix + plan.tls_certificate_key if plan.tls_certificate_key else None
    lines = [*HEADER, "", *_upstreams(plan), *_route_map(plan), *_server(plan, cert, key)]
    return "\n".join(lines) + "\n"


def wrapper(include: str, prefix: str, temp_dirs: Sequence[str]) -> str:
    """A whole nginx.conf around one http-context file, for ``nginx -t -c`` by any user."""
    temp = [f"    {d} {prefix}/{name};" for d, name in TEMP_PATH_DIRECTIVES if d in temp_dirs]
    return "\n".join(
        [
            f"pid {prefix}/nginx.pid;",
            "events { worker_connections 1024; }",
            "http {",
            "    access_log off;",
            *temp,
            f"    include {include};",
            "}",
            "",
        ]
    )
