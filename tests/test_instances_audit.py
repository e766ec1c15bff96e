"""audit over templates and instances: ollama-ops' own files stay at INFO; the guide's do not."""

from __future__ import annotations

import io
import json
from pathlib import Path

from ollama_ops import audit
from ollama_ops.apply import transaction as apply
from ollama_ops.audit import rules_instances
from ollama_ops.audit.model import Severity
from ollama_ops.cli import main as cli
from ollama_ops.cli.common import Env
from ollama_ops.model import facts as facts_mod
from ollama_ops.render import systemd as render
from ollama_ops.runtime import Runtime
from ollama_ops.unitfile import effective as effective_mod
from ollama_ops.unitfile.syntax import Assignment
from tests.helpers import INSTALLER_UNIT
from tests.instances_helpers import TWO, plan, two_gpu_host

# The seed guide's template and instance files, as it tells the reader to write them.
GUIDE_TEMPLATE = """\
[Unit]
Description=Ollama LLM Service (Instance %i)
After=network-online.target nvidia-persistenced.service

[Service]
Type=simple
User=ollama
Group=ollama
ExecStart=/usr/local/bin/ollama serve
Restart=on-failure
RestartSec=10
EnvironmentFile=/etc/ollama/%i.conf
NoNewPrivileges=true
ProtectSystem=strict
ProtectHome=true
ReadWritePaths=/var/lib/ollama/%i
PrivateTmp=true
LimitNOFILE=65536
LimitMEMLOCK=infinity

[Install]
WantedBy=multi-user.target
"""
GUIDE_ENV = "OLLAMA_HOST=0.0.0.0:{port}\nOLLAMA_MODELS={models}\nCUDA_VISIBLE_DEVICES={gpu}\n"


def write(root: Path, path: str, text: str) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def guide(
    root: Path,
    models: tuple[str, str] = ("/var/lib/ollama/gpu0/models", "/var/lib/ollama/gpu1/models"),
) -> None:
    write(root, "/etc/systemd/system/ollama@.service", GUIDE_TEMPLATE)
    for i, name in enumerate(("gpu0", "gpu1")):
        write(
            root,
            f"/etc/ollama/{name}.conf",
            GUIDE_ENV.format(port=11434 + i, models=models[i], gpu=i),
        )
        wants = root / f"etc/systemd/system/multi-user.target.wants/ollama@{name}.service"
        wants.parent.mkdir(parents=True, exist_ok=True)
        wants.symlink_to("/etc/systemd/system/ollama@.service")


def reports(root: Path) -> list[audit.Report]:
    facts = two_gpu_host()
    rt = Runtime(root=root)
    main = audit.audit(rt, "ollama.service", facts, with_exposure=False)
    return [main, *rules_instances.fleet_reports(rt, main, facts, with_exposure=False)]


def ids(report: audit.Report) -> dict[str, Severity]:
    return {f.id: f.severity for f in report.findings}


def test_our_instances_have_nothing_above_info(root: Path) -> None:
    d = plan(TWO + '\n[instances.shared]\nport = 11437\nmodels_dir = "shared"\nmemory_max = "8G"\n')
    apply.apply(Runtime(root=root), d, render.render(d))
    found = reports(root)
    assert [r.unit for r in found] == [
        "ollama.service",
        "ollama@big.service",
        "ollama@fast.service",
        "ollama@shared.service",
    ]
    for report in found:
        assert report.worst() is Severity.INFO, [f for f in report.findings if f.severity]


def test_the_guides_instances_are_found_and_judged(root: Path) -> None:
    guide(root)
    found = {r.unit: ids(r) for r in reports(root)}
    assert set(found) == {"ollama.service", "ollama@gpu0.service", "ollama@gpu1.service"}
    gpu0 = found["ollama@gpu0.service"]
    # %i is filled in: the EnvironmentFile is read and its variables judged.
    assert gpu0["instance-gpu-by-index"] is Severity.WARNING
    assert gpu0["instance-shared-home"] is Severity.WARNING
    assert gpu0["instance-port-clash"] is Severity.ERROR  # 0.0.0.0:11434 is ollama.service's
    assert "models-not-writable" not in gpu0  # ReadWritePaths=/var/lib/ollama/%i covers it
    assert "instance-port-clash" not in found["ollama@gpu1.service"]


def test_fleet_rules_store_gpu_and_memory(root: Path) -> None:
    guide(root, models=("/srv/models", "/srv/models"))
    write(root, "/etc/systemd/system/ollama@gpu1.service.d/gpu.conf",
          "[Service]\nEnvironment=CUDA_VISIBLE_DEVICES=0\nMemoryMax=900G\n")  # fmt: skip
    write(root, "/etc/systemd/system/ollama@gpu0.service.d/mem.conf", "[Service]\nMemoryMax=900G\n")
    found = {r.unit: ids(r) for r in reports(root)}
    gpu1 = found["ollama@gpu1.service"]
    assert gpu1["instance-store-pruned-twice"] is Severity.ERROR
    assert gpu1["instance-memory-overcommit"] is Severity.WARNING
    assert "instance-gpu-shared" not in gpu1  # EnvironmentFile wins over Environment=
    # A non-pruning sharer that may still write the shared store.
    write(root, "/etc/ollama/gpu1.conf", GUIDE_ENV.format(port=11435, models="/srv/models", gpu=0)
          + "OLLAMA_NOPRUNE=1\n")  # fmt: skip
    write(
        root,
        "/etc/systemd/system/ollama@gpu1.service.d/rw.conf",
        "[Service]\nReadWritePaths=/srv/models\n",
    )
    found = {r.unit: ids(r) for r in reports(root)}
    gpu1 = found["ollama@gpu1.service"]
    assert "instance-store-pruned-twice" not in gpu1
    assert gpu1["instance-store-writable"] is Severity.WARNING
    assert gpu1["instance-gpu-shared"] is Severity.WARNING


def test_an_instance_with_every_gpu_open(root: Path) -> None:
    guide(root)
    write(root, "/etc/systemd/system/ollama@gpu0.service.d/dev.conf",
          "[Service]\nDevicePolicy=closed\nDeviceAllow=/dev/nvidiactl rw\n"
          "DeviceAllow=/dev/nvidia-uvm rw\nDeviceAllow=char-nvidia-frontend rw\n")  # fmt: skip
    found = {r.unit: ids(r) for r in reports(root)}
    assert found["ollama@gpu0.service"]["instance-all-gpus"] is Severity.WARNING
    # GPU 0 is allowed; only the MIG nodes (a warning) are not.
    assert found["ollama@gpu0.service"]["gpu-device-denied"] is Severity.WARNING


def test_instance_specifiers_are_filled_in() -> None:
    unit = effective_mod.EffectiveUnit(
        "ollama@gpu0.service",
        "/etc/systemd/system/ollama@.service",
        (),
        (
            Assignment("Service", "EnvironmentFile", "/etc/ollama/%i.conf", "f", 1),
            Assignment("Service", "Environment", '"A=100%%i %n %p %z"', "f", 2),
        ),
        False,
    )
    done = rules_instances.expand_instance(unit)
    assert [a.value for a in done.assignments] == [
        "/etc/ollama/gpu0.conf",
        '"A=100%%i ollama@gpu0.service ollama %z"',
    ]


def test_cli_audit_json_lists_instances_and_exits_with_the_worst(
    root: Path, tmp_path: Path
) -> None:
    guide(root)
    facts_file = tmp_path / "facts.json"
    facts_file.write_text(facts_mod.dumps(two_gpu_host()))
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(
        ["audit", "--root", str(root), "--facts", str(facts_file), "--json"], Env(out, err)
    )
    data = json.loads(out.getvalue())
    assert data["unit"] == "ollama.service"
    assert [r["unit"] for r in data["instances"]] == ["ollama@gpu0.service", "ollama@gpu1.service"]
    assert code >= 11  # an error in an instance counts
    assert (root / "etc/systemd/system/ollama.service").read_text() == INSTALLER_UNIT


def test_cli_audit_text_and_json_cover_every_instance_and_the_worst_of_all_decides(
    root: Path, tmp_path: Path
) -> None:
    d = plan("")  # ollama-ops' own drop-in for the main unit: nothing above INFO there
    apply.apply(Runtime(root=root), d, render.render(d))
    guide(root)  # the guide's instances, with their errors
    facts_file = tmp_path / "facts.json"
    facts_file.write_text(facts_mod.dumps(two_gpu_host()))
    argv = ["audit", "--root", str(root), "--facts", str(facts_file)]
    out, err = io.StringIO(), io.StringIO()
    code = cli.main([*argv, "--json"], Env(out, err))
    data = json.loads(out.getvalue())
    assert data["worst"] == "info" and data["worst_of_all"] in ("error", "critical")
    assert code == {"error": 11, "critical": 12}[data["worst_of_all"]]
    assert data["summary"].startswith("audit: ollama.service and 2 instances: ")
    text, err = io.StringIO(), io.StringIO()
    assert cli.main(argv, Env(text, err)) == code
    words = " ".join(text.getvalue().split())
    assert words.startswith(" ".join(data["summary"].split()))
    for unit in ("ollama.service", "ollama@gpu0.service", "ollama@gpu1.service"):
        assert f"audit: {unit}: " in words
    assert max(len(line) for line in text.getvalue().splitlines()) <= 100
