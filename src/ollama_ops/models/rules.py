"""What the plan decides for egress and ``[models]``. Pure; called by plan/compose and hardening.

- ``service.egress = "closed"`` (default): ``IPAddressDeny=any`` stays, and
  the plan says how models get in (``ollama-ops pull``, ``[models]``).
- ``service.egress = "open"``: ``IPAddressDeny=`` is not written, nor the
  ``IPAddressAllow=`` list it would make meaningful; the plan says what that
  gives away. Only with a loopback bind: otherwise the allow-list of
  ``allowed_networks`` would silently stop being enforced.
- ``[models]`` with a non-loopback bind and egress closed is refused: apply
  would have to open the filter both ways, to every address, while it pulls.
"""

from __future__ import annotations

from ollama_ops.errors import PlanError
from ollama_ops.model.bind import is_loopback, validate_bind
from ollama_ops.model.config import DeploymentConfig, ModelsConfig
from ollama_ops.models.spec import EGRESS_OPEN

OPEN_REASON = (
    'left out: service.egress = "open": the server may reach any address (plain `ollama pull` '
    "works), and so may a compromised one; clients stay local through the loopback bind"
)
OPEN_ALLOW_REASON = (
    'left out: with service.egress = "open" there is no IPAddressDeny= to except from'
)
OPEN_NOTE = (
    'service.egress = "open": no IP filter, so `ollama pull` works and the server can reach any '
    'address; "closed" with `ollama-ops pull MODEL` opens it only while pulling'
)
CLOSED_NOTE = (
    "IPAddressDeny=any also blocks the server's own downloads: `ollama-ops pull MODEL` opens "
    "egress only while it pulls, and [models] lists what apply pulls and keeps warm"
)


def wanted(models: ModelsConfig) -> tuple[str, ...]:
    """Every model to have in the store: ``pull``, then the ``warm`` ones not listed there."""
    return models.pull + tuple(m for m in models.warm if m not in models.pull)


def egress_open(cfg: DeploymentConfig) -> bool:
    return cfg.service.egress == EGRESS_OPEN


def check(cfg: DeploymentConfig) -> None:
    """Refuse the combinations that would expose the API to every address."""
    host, _port = validate_bind(cfg.service.bind)
    if is_loopback(host):
        return
    if egress_open(cfg):
        raise PlanError(
            f'service.egress = "open" with service.bind = {cfg.service.bind!r} drops the IP filter '
            "that enforces allowed_networks (it applies both ways); bind to 127.0.0.1 or keep "
            'egress "closed" and use `ollama-ops pull --force MODEL`'
        )
    if wanted(cfg.models):
        raise PlanError(
            f"[models] with service.bind = {cfg.service.bind!r}: apply would open the IP filter "
            "both ways while it pulls, exposing the API to every address; bind to 127.0.0.1 "
            "(behind a proxy), or empty [models] and run `ollama-ops pull --force MODEL`"
        )


def notes(cfg: DeploymentConfig) -> list[str]:
    """What plan says about egress, and what apply will do with [models]."""
    said = [OPEN_NOTE if egress_open(cfg) else CLOSED_NOTE]
    models = cfg.models
    if wanted(models):
        warm = f"; keeps warm {', '.join(models.warm)} (keep_alive {models.keep_alive})"
        said.append(
            f"[models]: after a live apply, pulls what is missing of {', '.join(wanted(models))}"
            f"{warm if models.warm else ''}; checked with /api/tags and /api/ps"
        )
    return said
