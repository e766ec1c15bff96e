"""The tuner's pure core, and its driver with fakes: no I/O, no server, no systemd.

- params: names, values and the one-line refusals;
- plan: the grid, the current setting first and measured once, skipped combinations;
- pick: the argmax of throughput among the settings that meet the SLO (a property),
  and a reason for every other setting;
- report: fits 100 columns; the JSON twin;
- configfile: the winner written into [environment], the rest of the file intact;
- sweep: the original configuration restored on every path but a kept winner.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import select
import signal
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ollama_ops.bench.errors import BenchError
from ollama_ops.bench.slo import parse_slo
from ollama_ops.errors import ApplyError, CommandError, ConfigError
from ollama_ops.model import config as config_mod
from ollama_ops.tune import configfile, params, report
from ollama_ops.tune.command import confirm_on_terminal, parse_request, shielded
from ollama_ops.tune.errors import TuneError
from ollama_ops.tune.options import add_arguments
from ollama_ops.tune.params import Setting
from ollama_ops.tune.pick import Figures, Measurement, pick
from ollama_ops.tune.plan import MAX_SETTINGS, plan_sweep
from ollama_ops.tune.sweep import Outcome, run_sweep

NP = "OLLAMA_NUM_PARALLEL"
FA = "OLLAMA_FLASH_ATTENTION"
KV = "OLLAMA_KV_CACHE_TYPE"


def np_(n: int | None) -> Setting:
    return Setting.of({NP: None if n is None else str(n)})


# ------------------------------------------------------------------------- params


@pytest.mark.parametrize(
    ("text", "env", "values"),
    [
        ("num_parallel=1,2,4,8", NP, ("1", "2", "4", "8")),
        ("OLLAMA_NUM_PARALLEL=4,2,4", NP, ("4", "2")),  # duplicates dropped, order kept
        ("num-parallel= 3 ,5", NP, ("3", "5")),
        ("flash_attention=on,false", FA, ("1", "0")),
        ("kv_cache_type=Q8_0,f16", KV, ("q8_0", "f16")),
        ("context_length=2048,8192", "OLLAMA_CONTEXT_LENGTH", ("2048", "8192")),
        ("max_loaded_models=1,2", "OLLAMA_MAX_LOADED_MODELS", ("1", "2")),
    ],
)
def test_param_names_and_values(text: str, env: str, values: tuple[str, ...]) -> None:
    param, got = params.parse_param(text)
    assert (param.env, got) == (env, values)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("num_paralel=1,2", "did you mean 'num_parallel'?"),
        ("gpu_layers=1", "known: num_parallel, flash_attention"),
        ("num_parallel", "write NAME=V1,V2"),
        ("num_parallel=0,2", "'0' is not a whole number from 1 to 256"),
        ("num_parallel=2,,4", "an empty value"),
        ("num_parallel=1e3", "'1e3' is not a whole number"),
        ("kv_cache_type=q5_1", "one of f16, q8_0, q4_0"),
        ("flash_attention=maybe", "1 or 0"),
        ("context_length=99999999999", "whole number from 256"),
    ],
)
def test_bad_params_are_one_line_errors(text: str, needle: str) -> None:
    with pytest.raises(TuneError) as info:
        params.parse_param(text)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_num_parallel_is_always_swept_and_a_param_given_twice_is_refused() -> None:
    fa = params.lookup("flash_attention")
    axes = params.axes([(fa, ("0", "1"))])
    assert [(a.param.name, a.values) for a in axes] == [
        ("num_parallel", params.DEFAULT_NUM_PARALLEL),
        ("flash_attention", ("0", "1")),
    ]
    with pytest.raises(TuneError, match="given twice; list all its values once"):
        params.axes([(fa, ("0",)), (fa, ("1",))])


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    p.add_argument("--config")
    return p.parse_args(["--model", "m", *argv])


def test_request_defaults_and_shorthands() -> None:
    r = parse_request(_args("--flash-attention", "--kv-cache-type", "--slo", "tpot=50ms"))
    assert [a.param.name for a in r.axes] == ["num_parallel", "flash_attention", "kv_cache_type"]
    assert r.axes[2].values == ("f16", "q8_0", "q4_0")
    assert r.concurrency == 8  # the largest num_parallel swept
    assert r.warmup == 8 and r.duration_s == 30.0 and r.min_share == 0.99
    assert r.slo is not None and r.slo.limits == (("tpot", 0.05),)
    shape = r.shape()
    assert [s.concurrency for s in shape.stages] == [8] and shape.stop.duration_s == 30.0
    rate = parse_request(_args("--rate", "2.5", "--param", "num_parallel=1,2")).shape()
    assert rate.stages[0].rate == 2.5


@pytest.mark.parametrize(
    ("argv", "error", "needle"),
    [
        (["--slo", "ttft=fast"], BenchError, "--slo 'ttft=fast': cannot read"),
        (["--slo", "latency=5ms"], BenchError, "unknown metric 'latency'"),
        (["--param", "nope=1"], TuneError, "not a setting tune can sweep"),
        (["--duration", "0"], TuneError, "--duration 0: must be above 0"),
        (["--duration", "nan"], TuneError, "--duration nan"),
        (["--min-share", "150"], TuneError, "--min-share 150"),
        (["--concurrency", "0"], TuneError, "--concurrency 0"),
        (["--warmup", "-1"], TuneError, "--warmup -1"),
        (["--output-tokens", "x"], BenchError, "--output-tokens 'x'"),
        (["--json", "/nonexistent-dir/x.json"], BenchError, "does not exist"),
        (["--kv-cache-type", "q2"], TuneError, "--kv-cache-type 'q2'"),
    ],
)
def test_bad_options_are_refused_before_anything_runs(
    argv: list[str], error: type[Exception], needle: str
) -> None:
    with pytest.raises(error) as info:
        parse_request(_args(*argv))
    assert needle in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------------- plan


def test_the_current_setting_is_measured_first_and_once() -> None:
    axes = params.axes([params.parse_param("num_parallel=1,2,4,8")])
    plan = plan_sweep(axes, {NP: "2"})
    assert plan.settings == (np_(2), np_(1), np_(4), np_(8))
    assert plan.current == np_(2) and plan.current_in_grid
    # Outside the grid: one more run, still first.
    plan = plan_sweep(axes, {NP: "3"})
    assert plan.settings == (np_(3), np_(1), np_(2), np_(4), np_(8))
    assert not plan.current_in_grid
    # Unset now (Ollama's default): a setting of its own.
    assert plan_sweep(axes, {}).settings[0] == np_(None)


def test_the_grid_skips_a_quantized_cache_without_flash_attention() -> None:
    specs = ("num_parallel=1,2", "flash_attention=0,1", "kv_cache_type=f16,q8_0")
    axes = params.axes([params.parse_param(s) for s in specs])
    plan = plan_sweep(axes, {NP: "1", FA: "1", KV: "f16"})
    labels = [s.label() for s in plan.settings]
    assert labels[0] == "num_parallel=1 flash_attention=1 kv_cache_type=f16"
    assert len(labels) == len(set(labels)) == 6  # 8 combinations, 2 skipped
    assert all("q8_0" not in lab or "flash_attention=1" in lab for lab in labels)
    assert len(plan.skipped) == 2 and "Ollama ignores a quantized KV cache" in plan.skipped[0]


def test_a_grid_too_large_is_refused_with_its_shape() -> None:
    axes = params.axes(
        [
            params.parse_param("num_parallel=" + ",".join(str(n) for n in range(1, 9))),
            params.parse_param("context_length=2048,4096,8192,16384,32768"),
        ]
    )
    with pytest.raises(
        TuneError, match=rf"8 num_parallel x 5 context_length .* 40 settings .* {MAX_SETTINGS}"
    ):
        plan_sweep(axes, {})


# ------------------------------------------------------------------------- pick


def figures(tps: float, *, requests: int = 100, ok: int = 100, met: int | None = None) -> Figures:
    return Figures(
        requests=requests,
        ok=ok,
        errors=requests - ok,
        busy=0,
        tokens_per_s=tps,
        req_per_s=tps / 10,
        ttft_p50=0.1,
        ttft_p99=0.2,
        tpot_p50=0.02,
        tpot_p99=0.04,
        itl_p99=0.05,
        e2e_p99=1.0,
        slo_met=met,
        top_error="HTTP 500: boom" if ok < requests else "",
        client_bound="",
        load_waits=0,
    )


def test_pick_the_fastest_that_meets_the_slo_and_say_why_the_others_lost() -> None:
    slo = parse_slo("tpot=30ms")
    done = [
        Measurement(np_(1), figures(100, met=100)),
        Measurement(np_(2), figures(120, met=100)),
        Measurement(np_(4), figures(150, met=99)),
        Measurement(np_(8), figures(190, met=12)),
        Measurement(np_(16), None, "the service did not run it: out of memory"),
        Measurement(np_(32), figures(300, ok=50, met=50)),
    ]
    v = pick(done, slo, 0.99)
    assert v.winner == 2
    why = v.why_lost
    assert why[2] == ""
    assert why[0] == "slower: 100.0 tokens/s, 33.3% below num_parallel=4"
    assert why[1].startswith("slower: 120.0 tokens/s, 20.0% below")
    assert why[3] == (
        "breaks the SLO: 12% of requests met tpot=30ms (TPOT p99 40.0 ms > 30.0 ms); needs 99%"
    )
    assert why[4] == "the service did not run it: out of memory"
    assert why[5].startswith("only 50% of 100 requests succeeded (50 failed; HTTP 500: boom)")


def test_no_slo_means_the_fastest_that_mostly_succeeded() -> None:
    done = [Measurement(np_(1), figures(100)), Measurement(np_(2), figures(104))]
    v = pick(done, None, 0.99)
    assert v.winner == 1 and v.notes and "within 5%" in v.notes[0]
    none = pick([Measurement(np_(1), figures(100, ok=0))], None, 0.99)
    assert none.winner is None and none.why_lost[0].startswith("only 0% of 100")


_MEASURED = st.lists(
    st.tuples(
        st.floats(0, 1e4, allow_nan=False),  # tokens/s
        st.integers(0, 50),  # requests
        st.floats(0, 1),  # share that succeeded
        st.floats(0, 1),  # share that met the SLO, of the successful
        st.booleans(),  # failed to apply
    ),
    min_size=1,
    max_size=12,
)


@given(_MEASURED, st.sampled_from([0.5, 0.9, 0.99, 1.0]))
def test_pick_is_the_argmax_among_the_qualified(
    rows: list[tuple[float, int, float, float, bool]], share: float
) -> None:
    slo = parse_slo("ttft=1s")
    done = []
    for i, (tps, n, ok_share, met_share, failed) in enumerate(rows):
        ok = round(n * ok_share)
        met = round(ok * met_share)
        m = Measurement(np_(i + 1), None if failed else figures(tps, requests=n, ok=ok, met=met))
        done.append(m)
    v = pick(done, slo, share)

    def qualifies(m: Measurement) -> bool:
        f = m.figures
        return (
            f is not None
            and f.requests > 0
            and f.ok / f.requests >= share
            and (f.slo_met or 0) / f.requests >= share
        )

    ok_idx = [i for i, m in enumerate(done) if qualifies(m)]
    if not ok_idx:
        assert v.winner is None
    else:
        best = max(ok_idx, key=lambda i: (done[i].figures.tokens_per_s, -i))  # type: ignore[union-attr]
        assert v.winner == best
    for i, why in enumerate(v.why_lost):
        assert (why == "") == (i == v.winner)


# ------------------------------------------------------------------------- report


def test_the_report_fits_100_columns_and_has_a_json_twin() -> None:
    axes = params.axes(
        [params.parse_param("num_parallel=1,2"), params.parse_param("context_length=2048,131072")]
    )
    plan = plan_sweep(axes, {NP: "1", "OLLAMA_CONTEXT_LENGTH": "2048"})
    slo = parse_slo("ttft=500ms,tpot=50ms")
    done = [Measurement(s, figures(100 + i, met=100 - i)) for i, s in enumerate(plan.settings)]
    done[2] = Measurement(plan.settings[2], None, "the service did not run it: " + "x" * 200)
    v = pick(done, slo, 0.99)
    ctx = report.Context(
        "m:1b", "http://127.0.0.1:11434", "concurrency 2 for 30 s", slo, 0.99, "/etc/x.toml"
    )
    text = report.render(
        plan, done, v, ctx, "not written; the service runs its original configuration"
    )
    assert text.startswith("tune: best is num_parallel=1 context_length=131072")
    assert all(len(line) <= report.WIDTH for line in text.splitlines()), text
    assert "why the others lost:" in text and "the service did not run it" in text
    doc = report.to_json(plan, done, v, ctx, kept=False, final="f", partial=False)
    again = json.loads(json.dumps(doc))
    assert again["winner"] == {NP: "1", "OLLAMA_CONTEXT_LENGTH": "131072"}
    assert [r["winner"] for r in again["settings"]] == [False, True, False, False]
    assert again["settings"][0]["current"] and again["slo"] == {"ttft": 0.5, "tpot": 0.05}


# ------------------------------------------------------------------------- configfile

_FORMS = [
    '# my config\n[service]\nunit = "ollama.service"  # kept\n\n[environment]\n'
    'OLLAMA_NUM_PARALLEL = 2  # was 2\nOLLAMA_DEBUG = "1"\n\n[limits]\ncpu_weight = 100\n',
    'environment = { OLLAMA_DEBUG = "1" }\n[service]\nunit = "ollama.service"\n',
    'environment.OLLAMA_DEBUG = "1"\n[service]\nunit = "ollama.service"\n',
    '[service]\nunit = "ollama.service"\n',
    "",
]


@pytest.mark.parametrize("text", _FORMS)
def test_the_winner_goes_into_environment_and_the_rest_stays(text: str) -> None:
    new = configfile.with_environment(text, {NP: "4", FA: "1"}, "t.toml")
    cfg = config_mod.loads(new)
    before = config_mod.loads(text)
    assert cfg.environment == {**before.environment, NP: "4", FA: "1"}
    assert cfg.service == before.service and cfg.limits == before.limits
    for line in text.splitlines():  # every other line kept as it was
        if "OLLAMA_NUM_PARALLEL" not in line and "environment = {" not in line:
            assert line in new.splitlines()
    assert "OLLAMA_NUM_PARALLEL = 4" in new  # a number stays a TOML integer


def test_a_config_that_would_not_parse_is_never_written(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"t\.toml: environment\.HOME"):
        configfile.with_environment('[environment]\nHOME = "/x"\n', {NP: "2"}, "t.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        configfile.with_environment("[environment\n", {NP: "2"}, "t.toml")


def test_write_is_atomic_and_keeps_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "etc/ollama-ops/ollama-ops.toml"
    configfile.write(path, "[environment]\n")  # directory made, 0644
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    os.chmod(path, 0o600)
    configfile.write(path, '[environment]\nA = "1"\n')
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text().endswith('"1"\n')
    assert sorted(p.name for p in path.parent.iterdir()) == ["ollama-ops.toml"]


# ------------------------------------------------------------------------- sweep


class FakeApplier:
    def __init__(self, fail: set[Setting] | None = None, keep_fails: bool = False) -> None:
        self.running: Setting | None = None
        self.calls: list[str] = []
        self.fail = fail or set()
        self.keep_fails = keep_fails

    def apply(self, setting: Setting) -> str:
        self.calls.append(f"apply {setting.label()}")
        if setting in self.fail:
            raise ApplyError("it would not start; the previous configuration was restored")
        self.running = setting
        return "applied"

    def restore(self) -> str:
        self.calls.append("restore")
        self.running = None
        return "restored"

    def keep(self, setting: Setting) -> str:
        self.calls.append(f"keep {setting.label()}")
        if self.keep_fails:
            raise ApplyError("the winner did not start")
        self.running = setting
        return "kept"


def measure_by(
    table: dict[int, float], boom: Callable[[Setting], None] | None = None
) -> Callable[[Setting], Measurement]:
    def measure(setting: Setting) -> Measurement:
        if boom is not None:
            boom(setting)
        return Measurement(setting, figures(table[int(setting.get(NP) or 0)]))

    return measure


PLAN = plan_sweep(params.axes([params.parse_param("num_parallel=1,2,4")]), {NP: "1"})


def sweep(
    applier: FakeApplier, measure: Callable[[Setting], Measurement], yes: bool
) -> tuple[Outcome, list[Setting]]:
    asked: list[Setting] = []

    def confirm(m: Measurement) -> bool:
        asked.append(m.setting)
        return yes

    out = run_sweep(
        PLAN, applier, measure, slo=None, min_share=0.99, confirm=confirm, progress=lambda *a: None
    )
    return out, asked


@pytest.mark.parametrize("yes", [False, True])
def test_each_setting_once_then_keep_or_restore(yes: bool) -> None:
    a = FakeApplier()
    out, asked = sweep(a, measure_by({1: 100, 2: 180, 4: 150}), yes)
    assert a.calls[:3] == ["apply num_parallel=1", "apply num_parallel=2", "apply num_parallel=4"]
    assert a.calls[3:] == (["keep num_parallel=2"] if yes else ["restore"])
    assert asked == [np_(2)] and out.kept is yes


def test_the_current_setting_winning_writes_nothing_and_asks_nothing() -> None:
    a = FakeApplier()
    out, asked = sweep(a, measure_by({1: 200, 2: 180, 4: 150}), True)
    assert asked == [] and a.calls[-1] == "restore" and not out.kept


def test_a_setting_that_does_not_start_loses_and_the_sweep_goes_on() -> None:
    a = FakeApplier(fail={np_(4)})
    out, _ = sweep(a, measure_by({1: 100, 2: 180, 4: 999}), False)
    assert a.calls[-1] == "restore"
    assert out.verdict.why_lost[2].startswith("the service did not run it: it would not start")


def test_a_benchmark_that_fails_loses_and_the_sweep_goes_on() -> None:
    def boom(s: Setting) -> None:
        if s == np_(2):
            raise CommandError("cannot reach http://127.0.0.1:1 (refused)")

    a = FakeApplier()
    out, _ = sweep(a, measure_by({1: 100, 2: 180, 4: 150}, boom), False)
    assert out.verdict.winner == 2
    assert out.verdict.why_lost[1].startswith("the benchmark failed: cannot reach")


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), RuntimeError("a bug"), ApplyError("x")])
def test_the_original_comes_back_on_any_exception(exc: BaseException) -> None:
    def boom(s: Setting) -> None:
        if s == np_(2):
            raise exc

    a = FakeApplier()
    with pytest.raises(type(exc)):
        sweep(a, measure_by({1: 100, 2: 180, 4: 150}, boom), True)
    assert a.calls == ["apply num_parallel=1", "apply num_parallel=2", "restore"]
    assert a.running is None


def test_a_winner_that_fails_to_keep_is_restored_too() -> None:
    a = FakeApplier(keep_fails=True)
    with pytest.raises(ApplyError, match="did not start"):
        sweep(a, measure_by({1: 100, 2: 180, 4: 150}), True)
    assert a.calls[-2:] == ["keep num_parallel=2", "restore"] and a.running is None


def test_signals_wait_while_the_original_is_put_back_and_children_do_not_inherit_it() -> None:
    before = signal.getsignal(signal.SIGINT)
    with shielded():
        os.kill(os.getpid(), signal.SIGINT)  # would raise KeyboardInterrupt here
        os.kill(os.getpid(), signal.SIGTERM)  # would end the test run
        status = subprocess.run(
            ["grep", "-E", "^(SigBlk|SigIgn):", "/proc/self/status"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    # A service started meanwhile (systemctl, the simulator) can still be stopped.
    for line in status.splitlines():
        mask = int(line.split()[1], 16)
        assert not mask & (1 << (signal.SIGINT - 1) | 1 << (signal.SIGTERM - 1)), status
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize(("answer", "kept"), [("y\n", True), ("yes\n", True), ("\n", False)])
def test_the_question_is_asked_only_on_a_terminal(answer: str, kept: bool) -> None:
    winner = Measurement(np_(4), figures(150))
    main_fd, side_fd = os.openpty()
    reader = os.fdopen(side_fd, "r")
    writer = os.fdopen(os.dup(side_fd), "w")
    with reader, writer, os.fdopen(main_fd, "rb", buffering=0) as typed:
        os.write(main_fd, answer.encode())
        restored: list[str] = []

        def restore() -> str:
            restored.append("restore")
            return "restored the original configuration"

        confirm = confirm_on_terminal(False, Path("/etc/x.toml"), writer, reader, restore)
        assert confirm(winner) is kept
        # A pty hands out what was written in pieces: read until the question is all there.
        asked = ""
        while "[y/N]" not in asked and select.select([typed], [], [], 5)[0]:
            asked += typed.read(300).decode()
    # The original comes back before the question: nobody answering leaves it running.
    assert restored == ["restore"]
    assert "tune: restored the original configuration" in asked
    assert "write OLLAMA_NUM_PARALLEL=4 to /etc/x.toml and apply it? [y/N]" in asked
    # No terminal: nothing asked, nothing kept; --yes: kept without asking.
    assert (
        confirm_on_terminal(False, Path("/x"), io.StringIO(), io.StringIO("y\n"))(winner) is False
    )
    assert confirm_on_terminal(True, Path("/x"), io.StringIO(), io.StringIO())(winner) is True
