"""Drive a sweep: apply each setting, measure it, pick, keep the winner or restore the original.

Everything outside the process goes through two seams, so tests drive a
simulator (or fakes) with the same loop that drives systemd:

* an :class:`Applier` puts a setting in place (the real one: plan + apply,
  with apply's rollback when the service does not come up), restores the
  original configuration, or keeps a setting for good;
* a ``measure`` function warms the model and benchmarks the running service.

Whatever happens (a setting that fails, a benchmark error, Ctrl-C, any
exception) the service ends on a known-good configuration: the original,
unless the winner was kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ollama_ops.bench.slo import Slo
from ollama_ops.errors import ApplyError, CommandError

from .params import Setting
from .pick import Measurement, Verdict, pick
from .plan import SweepPlan


class Applier(Protocol):
    """Puts settings in place on the service being tuned."""

    def apply(self, setting: Setting) -> str:
        """Run the service with ``setting``; a note on what was done.

        ApplyError: the service would not run it and the previous setting is
        back (the sweep goes on). Any other error ends the sweep.
        """
        ...

    def restore(self) -> str:
        """Put the original configuration back (idempotent); a note on what was done."""
        ...

    def keep(self, setting: Setting) -> str:
        """Make ``setting`` the service's configuration for good; a note on what was done."""
        ...


#: Warms the model and benchmarks the running service. CommandError: this setting could
#: not be measured (the sweep goes on); KeyboardInterrupt: stop the whole tune.
Measure = Callable[[Setting], Measurement]
#: Asked once with the winner: keep it? (the user's answer, or --yes)
Confirm = Callable[[Measurement], bool]


class Progress(Protocol):
    def __call__(self, index: int, total: int, setting: Setting, what: str) -> None: ...


@dataclass(frozen=True)
class Outcome:
    plan: SweepPlan
    measurements: tuple[Measurement, ...]
    verdict: Verdict
    kept: bool  # the winner is now the configuration
    final_note: str  # what keeping or restoring did


def measure_all(
    plan: SweepPlan,
    applier: Applier,
    measure: Measure,
    progress: Progress,
    done: list[Measurement] | None = None,
) -> list[Measurement]:
    """Apply and measure each setting of the plan once, in order, appending to ``done``."""
    done = [] if done is None else done
    total = len(plan.settings)
    for i, setting in enumerate(plan.settings, 1):
        progress(i, total, setting, "applying")
        try:
            note = applier.apply(setting)
        except ApplyError as exc:
            progress(i, total, setting, f"did not start: {exc}")
            done.append(Measurement(setting, None, f"the service did not run it: {exc}"))
            continue
        progress(i, total, setting, f"{note}; warming and benchmarking")
        try:
            m = measure(setting)
        except CommandError as exc:
            m = Measurement(setting, None, f"the benchmark failed: {exc}")
        done.append(Measurement(m.setting, m.figures, m.failure, note, m.seconds))
    return done


def run_sweep(
    plan: SweepPlan,
    applier: Applier,
    measure: Measure,
    *,
    slo: Slo | None,
    min_share: float,
    confirm: Confirm,
    progress: Progress,
    sink: list[Measurement] | None = None,
) -> Outcome:
    """The whole tune: measure every setting, pick, keep the winner if confirmed.

    The original configuration is restored in every other case, also when
    this raises (Ctrl-C included); the exception then goes on. ``sink``
    receives each measurement as it is made (for a report after Ctrl-C).
    """
    kept = False
    try:
        measurements = measure_all(plan, applier, measure, progress, sink)
        verdict = pick(measurements, slo, min_share)
        note = ""
        if verdict.winner is not None:
            winner = measurements[verdict.winner]
            if winner.setting != plan.current and confirm(winner):
                note = applier.keep(winner.setting)
                kept = True
    finally:
        if not kept:
            note = applier.restore()
    return Outcome(plan, tuple(measurements), verdict, kept, note)
