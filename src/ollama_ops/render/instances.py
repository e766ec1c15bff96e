"""InstancesPlan -> ollama@.service, one drop-in per instance, the boot drop-in, nginx. Pure."""

from __future__ import annotations

from ollama_ops.model.deployment import Deployment, Section
from ollama_ops.model.instances import InstancesPlan
from ollama_ops.render import nginx
from ollama_ops.render.systemd import _sections, render_dropin
from ollama_ops.unitfile import syntax as unit

TEMPLATE_HEADER = (
    "Written by ollama-ops: the template of every Ollama instance (ollama@NAME.service).",
    "Each instance's own values are in ollama@NAME.service.d/50-ollama-ops.conf;",
    "`ollama-ops plan` explains every value. Manage instances in the config, not here.",
)


def render_template(template: Deployment) -> str:
    pairs = [*template.base_unit]
    pairs += [(s.section, s.key, s.value) for s in template.active() if s.value is not None]
    return unit.render(_sections(pairs, with_install=True), header=TEMPLATE_HEADER)


def render_boot(plan: InstancesPlan) -> str:
    """multi-user.target wants every instance: a file, so rollback restores it with the rest."""
    wants = [("Wants", d.unit_name) for d in plan.instances]
    return unit.render(
        [(Section.UNIT.value, wants)],
        header=("Written by ollama-ops: start the Ollama instances at boot.",),
    )


def render(plan: InstancesPlan) -> dict[str, str]:
    """Every file of the instances and their front door, keyed by absolute path."""
    files = {plan.template.unit_path: render_template(plan.template)}
    files[plan.boot_path] = render_boot(plan)
    for d in plan.instances:
        files[d.dropin_path] = render_dropin(d)
    if plan.frontdoor is not None:
        files[plan.frontdoor.path] = nginx.render(plan.frontdoor)
    return files
