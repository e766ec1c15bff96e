"""Keep Ollama alive: probes, verdicts, the recovery policy, actions, metrics, the supervisor.

The flow (side effects only at the two ends)::

    probes (HTTP, systemctl, cgroup, GPU, journal) -> Snapshot
    Snapshot -> verdict.assess()             (pure)  -> Verdict
    Verdict  -> policy.step()                (pure)  -> Decision
    Decision -> actions.execute()            (systemctl, HTTP, modprobe through the Runtime)

``ollama-ops health`` runs the first two once; ``ollama-ops watch`` runs the
whole chain in a loop (``supervisor``) and exports metrics (``metrics``).
"""
