"""`ollama-ops facts`: what this host has."""

from __future__ import annotations

import argparse

from ollama_ops.cli.common import Env, add_root, runtime
from ollama_ops.cli.output import Column, Doc, emit, plural, printable, same_inputs, width_for
from ollama_ops.errors import ExitStatus
from ollama_ops.model import facts as facts_mod
from ollama_ops.model.config import format_size


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "facts",
        help="what this host has: RAM, CPUs, NUMA, GPUs, systemd, ollama",
        description="Probe this host (or the tree under --root): RAM, CPUs, NUMA nodes, GPUs "
        "(NVML, else nvidia-smi; AMD through sysfs), GPU device nodes, the systemd version and "
        "the ollama install. `facts --json` is the input of `plan --facts` on another machine.",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="the facts as JSON: the input for `plan --facts FILE` and `apply --facts FILE`",
    )
    add_root(p, "read /proc, /sys and /etc under DIR")
    p.set_defaults(func=run)


def _gpu(g: facts_mod.Gpu) -> str:
    parts = [f"{g.vendor.value} {printable(g.name) or 'unnamed'}", format_size(g.memory_bytes)]
    if g.numa_node is not None:
        parts.append(f"NUMA node {g.numa_node}")
    if g.power_limit_max_w is not None:
        parts.append(f"{g.power_limit_max_w:g} W max")
    if g.clock_max_mhz is not None:
        parts.append(f"{g.clock_max_mhz} MHz max")
    if g.pci_bus_id:
        parts.append(f"PCI {g.pci_bus_id}")
    return ", ".join(parts)


def facts_doc(
    host: facts_mod.HostFacts, width: int = 100, plan_cmd: str = "ollama-ops plan"
) -> Doc:
    """Summary first (the host in one sentence, what to run next), then one row per fact."""
    from ollama_ops.plan.explain import host_summary

    doc = Doc(width)
    doc.summary(f"facts: {host_summary(host)}")
    doc.text(f"next: `{plan_cmd}` shows what ollama-ops would set for this host", indent="  ")
    doc.blank()
    nodes = "; ".join(f"node {n.id}: CPUs {printable(n.cpus)}" for n in host.numa_nodes)
    ollama = host.ollama
    rows: list[tuple[str, str]] = [
        ("host", printable(host.hostname) or "(no name)"),
        ("memory", format_size(host.memory_bytes)),
        ("CPUs", str(host.cpus)),
        ("NUMA", f"{plural(len(host.numa_nodes), 'node')} ({nodes})" if nodes else "1 node"),
    ]
    rows += [(f"GPU {g.index}", _gpu(g)) for g in host.gpus] or [("GPUs", "none found")]
    if host.device_nodes:
        rows.append(("GPU nodes", " ".join(printable(d) for d in host.device_nodes)))
    rows.append(("systemd", str(host.systemd_version)))
    install = (
        f"{printable(ollama.binary)} ({printable(ollama.version or 'version unknown')})"
        if ollama.binary
        else "not installed"
    )
    rows.append(("ollama", install))
    account = (
        f"{printable(ollama.user)}, group {printable(ollama.group or '?')}, "
        f"home {printable(ollama.home or '?')}"
        if ollama.user
        else "no ollama user: a unit ollama-ops writes uses DynamicUser="
    )
    rows.append(("user", account))
    rows.append(("unit", printable(ollama.unit_path or "none installed")))
    doc.table([((k, "bold"), (v, "")) for k, v in rows], (Column(9),))
    return doc


def run(args: argparse.Namespace, env: Env) -> int:
    from ollama_ops.host import probe

    host = probe.probe_host(runtime(args, env))
    if args.json:
        env.stdout.write(facts_mod.dumps(host))
        return ExitStatus.OK
    emit(env.stdout, facts_doc(host, width_for(env.stdout), same_inputs("plan", args)))
    return ExitStatus.OK
