"""The plan: HostFacts + DeploymentConfig -> Deployment.

Pure: no I/O. Every value carries its source (a rule or the operator's file)
and the reason shown by ``ollama-ops plan``. Directives the target systemd
does not know are left out, with the reason, so the renderer never writes
them blindly. The rules live in ``sizing`` and ``hardening``; this module
decides the service's identity (user, home, model store, write paths) and
puts the rules together.
"""

from __future__ import annotations

from ollama_ops.errors import PlanError
from ollama_ops.health import unitplan
from ollama_ops.logs import plan as logs_plan
from ollama_ops.model.bind import is_loopback, validate_bind
from ollama_ops.model.config import DeploymentConfig
from ollama_ops.model.deployment import Deployment, Section, Source, api_url
from ollama_ops.model.facts import INSTALLER_HOME, HostFacts
from ollama_ops.models import rules as models_rules
from ollama_ops.plan import guide, hardening, instances, sizing
from ollama_ops.plan.builder import Builder
from ollama_ops.plan.hardening import Grant
from ollama_ops.unitfile import directives
from ollama_ops.unitfile.paths import writable_problem

DYNAMIC_HOME = "/var/lib/ollama"
DEFAULT_BINARY = "/usr/local/bin/ollama"


def _networks(svc_bind: str, host: str, allowed: tuple[str, ...]) -> list[Grant]:
    """Who may talk to the service (IPAddressAllow=), each with where it came from."""
    networks: list[Grant] = [
        ("localhost", Source.HARDENING, "loopback clients, and the server's own runners")
    ]
    if is_loopback(host):
        if allowed:
            raise PlanError(
                f"service.allowed_networks is set but service.bind = {svc_bind!r} is loopback; "
                "bind to a non-loopback address or remove allowed_networks"
            )
        return networks
    if not allowed:
        raise PlanError(
            f"service.bind = {svc_bind!r} exposes the API to the network; list the client "
            'networks in service.allowed_networks (e.g. ["10.0.0.0/8"]) or bind to 127.0.0.1'
        )
    if host not in ("0.0.0.0", "::"):
        networks.append(
            (host, Source.CONFIG, "service.bind: health checks connect from the bind address")
        )
    for net in allowed:
        if net not in [n for n, _s, _r in networks]:
            networks.append((net, Source.CONFIG, "service.allowed_networks"))
    return networks


def _write_paths(cfg: DeploymentConfig, home: str, models: str, own_home: bool) -> list[Grant]:
    """ReadWritePaths=, each checked against the system directories, with its source."""
    svc = cfg.service
    paths: list[Grant] = []
    if own_home:
        paths.append((home, Source.RULE, "the service user's home: Ollama writes its key there"))
    if not (models == home or models.startswith(home + "/")):
        key = "service.models_dir" if svc.models_dir else "environment.OLLAMA_MODELS"
        paths.append((models, Source.CONFIG, f"{key}: the model store"))
    for path in cfg.hardening.read_write_paths:
        if path not in [p for p, _s, _r in paths]:
            paths.append((path, Source.CONFIG, "hardening.read_write_paths"))
    for path, _source, reason in paths:
        problem = writable_problem(path)
        if problem is not None:
            raise PlanError(
                f"ReadWritePaths={path} ({reason}) would make a system directory writable "
                f"({problem}); give the service a directory of its own, e.g. /srv/ollama"
            )
    return paths


def _environment_notes(cfg: DeploymentConfig, write_paths: list[Grant]) -> list[str]:
    """What variables of [environment] change beyond Ollama; PlanError where they undo the sandbox."""
    env = cfg.environment
    notes: list[str] = []
    if "PATH" in env:
        notes.append(
            "environment.PATH replaces systemd's search path for ollama serve and its helpers: "
            "keep every directory in it root-owned"
        )
    libs = [d for d in env.get("LD_LIBRARY_PATH", "").split(":") if d]
    for lib in libs:
        for path, _source, _reason in write_paths:
            if lib == path or lib.startswith(path + "/"):
                raise PlanError(
                    f"environment.LD_LIBRARY_PATH names {lib}, which the service may write "
                    f"(ReadWritePaths={path}): a compromised server could plant a library "
                    "there; point it at a root-owned directory"
                )
    if "LD_LIBRARY_PATH" in env:
        notes.append(
            "environment.LD_LIBRARY_PATH: libraries there load into ollama serve and every "
            "runner before the system's; keep those directories root-owned and read-only"
        )
    return notes


def build(facts: HostFacts, cfg: DeploymentConfig) -> Deployment:
    """Decide every setting of the deployment for this host and config."""
    svc = cfg.service
    host, port = validate_bind(svc.bind)
    models_rules.check(cfg)
    networks = _networks(svc.bind, host, svc.allowed_networks)
    if svc.models_dir and "OLLAMA_MODELS" in cfg.environment:
        raise PlanError(
            "set the model store once: service.models_dir or environment.OLLAMA_MODELS, not both"
        )

    b = Builder(facts.systemd_version, cfg.hardening.relax)
    for name in cfg.hardening.relax:
        if directives.lookup(name) is None:
            raise PlanError(
                f"hardening.relax names {name!r}, which is not a directive ollama-ops writes"
            )
    installed = facts.ollama
    dynamic = installed.user is None
    # A system user made with `-d /` or `-d /nonexistent` has no usable home:
    # systemd sets no $HOME for "/", and `ollama serve` then exits. Give it a state directory.
    homeless = not dynamic and installed.home in ("/", "/nonexistent")
    home = DYNAMIC_HOME if dynamic or homeless else (installed.home or INSTALLER_HOME)
    models = svc.models_dir or cfg.environment.get("OLLAMA_MODELS") or f"{home}/.ollama/models"
    if dynamic and (svc.models_dir or "OLLAMA_MODELS" in cfg.environment):
        raise PlanError(
            f"a models directory ({models}) needs a fixed service user, but this host has no "
            "ollama user (DynamicUser); create it with `useradd -r -U -m -d /usr/share/ollama "
            "ollama` or leave service.models_dir unset"
        )
    rw_paths = _write_paths(cfg, home, models, own_home=not (dynamic or homeless))

    unit = Section.UNIT
    b.add(unit, "After", "network-online.target", Source.RULE, "bind after the network is up")
    b.add(
        unit,
        "Wants",
        "network-online.target",
        Source.RULE,
        "pull network-online in (the installer only orders)",
    )
    modules: tuple[str, ...] = ()
    if facts.nvidia_gpus:
        modules = ("nvidia", "nvidia_uvm")
        b.add(
            unit,
            "After",
            "systemd-modules-load.service nvidia-persistenced.service",
            Source.RULE,
            "GPU driver loaded first: NoNewPrivileges stops nvidia-modprobe from loading nvidia_uvm later",
        )
    hardening.restart(b, cfg)
    sizing.memory(b, facts, instances.main_share(cfg, facts))  # a share beside instances
    sizing.cpu(b, facts, cfg)
    if dynamic or homeless:
        b.add(
            Section.SERVICE,
            "StateDirectory",
            "ollama",
            Source.RULE,
            "no ollama user: systemd makes /var/lib/ollama"
            if dynamic
            else f"the ollama user's home is {installed.home}: systemd makes /var/lib/ollama instead",
        )
        if facts.amd_gpus:
            b.add(
                Section.SERVICE,
                "SupplementaryGroups",
                "render video",
                Source.RULE,
                "ROCm opens /dev/kfd and /dev/dri through these groups",
            )
        b.add(
            Section.ENV,
            "HOME",
            home,
            Source.RULE,
            "Ollama keeps its key and models under $HOME/.ollama",
        )
    hardening.hardening(b, facts, cfg, rw_paths, networks)
    bind_text = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    sizing.ollama_env(b, facts, cfg, bind_text, models)
    logs_plan.settings(b, cfg.logs, cfg.set_keys)
    unitplan.service_settings(b, cfg, api_url(host, port))

    base: tuple[tuple[Section, str, str], ...] = ()
    write_base = installed.unit_path is None
    if write_base:
        binary = svc.binary or installed.binary or DEFAULT_BINARY
        base = (
            (Section.UNIT, "Description", "Ollama Service"),
            (Section.UNIT, "Documentation", "https://github.com/ollama/ollama"),
            (Section.SERVICE, "ExecStart", f"{binary} serve"),
            *(
                ((Section.SERVICE, "DynamicUser", "yes"),)
                if dynamic
                else (
                    (Section.SERVICE, "User", installed.user or "ollama"),
                    (Section.SERVICE, "Group", installed.group or installed.user or "ollama"),
                )
            ),
            (Section.SERVICE, "Restart", "on-failure"),
        )
    elif svc.binary:
        b.add(Section.SERVICE, "ExecStart", "", Source.CONFIG, "reset the packaged ExecStart")
        b.add(Section.SERVICE, "ExecStart", f"{svc.binary} serve", Source.CONFIG, "service.binary")
    guide.left_out(b)
    notes = _environment_notes(cfg, rw_paths)
    if installed.binary is None and not svc.binary:
        notes.append(
            f"ollama is not installed here: the unit runs {DEFAULT_BINARY}; install it before starting"
        )
    notes.extend(models_rules.notes(cfg))  # egress and [models]: models/rules.py
    notes += logs_plan.notes(cfg.logs, svc.unit, facts.systemd_version)
    main = Deployment(
        unit_name=svc.unit,
        systemd_version=facts.systemd_version,
        settings=tuple(b.settings),
        write_base_unit=write_base,
        base_unit=base,
        modules_load=modules,
        bind_host=host,
        bind_port=port,
        notes=tuple(notes),
        files=tuple(logs_plan.files(cfg.logs, facts.systemd_version).items()),
        watch=unitplan.watch_plan(  # health: [watch]
            cfg,
            api_url(host, port),
            [n for n, _s, _r in networks],
            bool(facts.nvidia_gpus),
            facts.systemd_version,
        ),
    )
    return instances.attach(facts, cfg, main)  # ollama@.service and its instances, if any
