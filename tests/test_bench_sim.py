"""The benchmark against the simulator on 127.0.0.1 (in-process, and the CLI in a child for
Ctrl-C), and against a stub server that answers 503 to every generation."""

from __future__ import annotations

import asyncio
import copy
import io
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ollama_ops.bench import runner, shapes, summary, workload
from ollama_ops.bench.errors import TargetError
from ollama_ops.bench.records import Outcome
from ollama_ops.bench.wire import Api
from ollama_ops.cli.common import Env
from ollama_ops.cli.main import main
from tests.sim_helpers import SRC, TEST_PROFILE, SimThread, free_port, wait_until


@pytest.fixture(scope="module")
def sim() -> Iterator[SimThread]:
    with SimThread(env={"OLLAMA_NUM_PARALLEL": "4"}) as s:
        yield s


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = main(list(argv), Env(stdout=out, stderr=err))
    return rc, out.getvalue(), err.getvalue()


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("api", list(Api))
def test_each_api_streams_and_takes_token_counts_from_the_server(sim: SimThread, api: Api) -> None:
    shape = shapes.concurrency_sweep((2,), shapes.Stop(requests=6), warmup=1)
    wl = workload.builtin(workload.parse_output_length("5"))
    res = runner.run(shape, runner.Target(sim.url, "tiny", api), wl)
    recs = res.stages[0].records
    assert len(recs) == 6 and len(res.warmup) == 1
    for r in recs:
        assert r.outcome is Outcome.OK, r.error
        assert (r.output_tokens, len(r.times), r.max_tokens) == (5, 5, 5)
        assert r.prompt_tokens and r.prompt_tokens > 0
        assert r.done_reason == "length"
        ttft = r.ttft
        assert ttft is not None and 0 < ttft <= r.e2e
        assert len(r.gaps()) == 4
    if api is not Api.OPENAI:  # the native API also reports Ollama's durations
        assert all(r.eval_s and r.total_s and r.load_s is not None for r in recs)
    assert res.model_loaded_before is not None and res.server_version.endswith("-sim")


def test_streams_start_over_the_ramp_up(sim: SimThread) -> None:
    stop = shapes.Stop(duration_s=0.6)
    shape = shapes.concurrency_sweep((4,), stop, warmup=0, ramp_s=0.4)
    res = runner.run(shape, runner.Target(sim.url, "tiny", Api.GENERATE), workload.builtin())
    recs = res.stages[0].records
    first = min(r.ready for r in recs)
    # A stream's first request is ready at its place on the ramp; later ones when the last ended.
    offsets = {round(r.ready - first, 6) for r in recs}
    assert {0.0, 0.1, 0.2, 0.3} <= offsets
    assert all(r.sent >= r.ready for r in recs)  # none sent before its start on the ramp
    assert shapes.concurrency_sweep((64,), shapes.Stop(requests=1)).ramp_for(64) == 0.128
    assert shapes.concurrency_sweep((900,), shapes.Stop(requests=1)).ramp_for(900) == 1.0


def test_rate_stage_keeps_to_its_cap_and_measures_slip(sim: SimThread) -> None:
    shape = shapes.rate_sweep(
        (40.0,),
        shapes.Stop(requests=8),
        arrival=shapes.Arrival.CONSTANT,
        max_concurrency=2,
        warmup=0,
    )
    wl = workload.builtin(workload.parse_output_length("3"))
    res = runner.run(shape, runner.Target(sim.url, "slow:1b"), wl)
    recs = res.stages[0].records
    assert [r.outcome for r in recs] == [Outcome.OK] * 8
    events = sorted([(r.sent, 1) for r in recs] + [(r.end, -1) for r in recs])
    depth = peak = 0
    for _, step in events:
        depth += step
        peak = max(peak, depth)
    assert peak == 2  # 40/s offered, each takes ~60 ms: the cap holds it at two
    assert all(r.sent >= r.ready for r in recs)
    s = summary.summarize(res).stages[0]
    assert s.client.slip_p99_s >= 0 and s.tpot is not None


def test_cli_sweep_writes_json_csv_and_png(sim: SimThread, tmp_path: Path) -> None:
    j, c, p = tmp_path / "r.json", tmp_path / "r.csv", tmp_path / "r.png"
    rc, out, err = cli(
        "bench", "--model", "tiny", "--url", sim.url, "--concurrency", "1,3",
        "--requests", "6", "--output-tokens", "4", "--slo", "ttft=2s,tpot=1s",
        "--json", str(j), "--csv", str(c), "--plot", str(p),
    )  # fmt: skip
    assert rc == 0, err
    assert max(len(x) for x in out.splitlines()) <= 100
    assert out.startswith("ollama-ops bench: tiny at " + sim.url)
    doc = json.loads(j.read_text())
    assert [s["level"] for s in doc["stages"]] == [1.0, 3.0]
    assert all(s["ok"] == 6 and s["slo_share"] == 1.0 for s in doc["stages"])
    assert doc["slo"] == {"ttft": 2.0, "tpot": 1.0} and doc["partial"] is False
    rows = c.read_text().splitlines()
    assert len(rows) == 1 + 1 + 12  # header, warm-up, two stages of six
    assert p.read_bytes().startswith(b"\x89PNG")
    # compare: the same file twice has no regression; exit 1 once B is worse
    assert cli("bench", "compare", str(j), str(j), "--fail-on-regression", "5%")[0] == 0
    worse = json.loads(j.read_text())
    worse["stages"][1]["output_tokens_per_s"] /= 2
    (tmp_path / "worse.json").write_text(json.dumps(worse))
    rc, out, _ = cli("bench", "compare", str(j), str(tmp_path / "worse.json"),
                     "--fail-on-regression", "5%")  # fmt: skip
    assert rc == 1 and "REGRESSION" in out


def test_default_is_the_guides_sequential_benchmark(sim: SimThread) -> None:
    rc, out, err = cli("bench", "--model", "tiny", "--url", sim.url, "--json", "-")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["shape"]["name"] == "sequential" and doc["stages"][0]["requests"] == 5
    assert doc["stages"][0]["guide_tokens_per_s"] > 0
    assert "the guide's figure" in err  # the text report goes to stderr with --json -


@pytest.mark.parametrize(
    ("args", "rc", "needle"),
    [
        (["--model", "nope"], 3, "model 'nope' is not on"),
        (["--model", "tiny", "--slo", "ttft=5"], 2, "needs a unit"),
        (["--model", "tiny", "--concurrency", "2,x"], 2, "whole numbers"),
        (["--model", "tiny", "--json", "/nonexistent/dir/r.json"], 2, "does not exist"),
        (["--model", "tiny", "--duration", "5"], 2, "--duration needs --concurrency"),
        (["--model", "tiny", "--rate", "1", "--ramp-up", "2"], 2, "give --concurrency N"),
        (["--model", "tiny", "--concurrency", "2", "--ramp-up", "-1"], 2, "from 0 to 3600"),
        ([], 2, "--model is required"),
    ],
)
def test_bad_input_is_one_line(sim: SimThread, args: list[str], rc: int, needle: str) -> None:
    code, _, err = cli("bench", "--url", sim.url, *args)
    assert code == rc
    line = one_line_error(err)
    assert needle in line
    if "nope" in needle:
        assert "tiny:latest" in line and "slow:1b" in line  # the models that exist


def test_bad_jsonl_line_is_named(sim: SimThread, tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "fine"}\n{"prompt": "broken"\n')
    rc, _, err = cli("bench", "--url", sim.url, "--model", "tiny", "--prompts", str(prompts))
    assert rc == 2 and f"{prompts}:2: not JSON" in one_line_error(err)


def test_unreachable_server() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    rc, _, err = cli("bench", "--model", "m", "--url", url)
    assert rc == 3
    assert one_line_error(err) == (
        f"ollama-ops: error: cannot reach {url} (connection refused); start Ollama or fix --url"
    )
    with pytest.raises(TargetError, match="cannot reach"):
        runner.run(shapes.sequential(1), runner.Target(url, "m"))


def test_a_model_load_is_reported_not_folded_into_ttft() -> None:
    profile = copy.deepcopy(TEST_PROFILE)
    profile["models"][0]["load_seconds"] = 0.5
    with SimThread(profile=profile) as s:
        shape = shapes.concurrency_sweep((2,), shapes.Stop(requests=4), warmup=0)
        wl = workload.builtin(workload.parse_output_length("3"))
        res = runner.run(shape, runner.Target(s.url, "tiny"), wl)
    assert res.model_loaded_before is False
    summ = summary.summarize(res)
    st = summ.stages[0]
    assert st.ok == 4 and st.load_waits == 2
    waited = [r for r in res.stages[0].records if r.waited_for_load]
    assert sorted(r.index for r in waited) == [0, 1]  # the two sent while the model loaded
    assert st.ttft is not None and st.ttft.n == 2  # the two that waited are left out
    from ollama_ops.bench import report

    text = report.render(summ)
    assert "was not loaded before the run; the first requests loaded it" in text
    assert "2 request(s) of concurrency 2 waited for a load" in text


def test_errors_during_streams_are_counted_apart(sim: SimThread) -> None:
    shape = shapes.concurrency_sweep((2,), shapes.Stop(requests=4), warmup=0)
    wl = workload.builtin(workload.parse_output_length("100"))
    timer = threading.Timer(0.4, lambda: sim.faults(set_=["gpu-lost"]))
    timer.start()
    try:
        res = runner.run(shape, runner.Target(sim.url, "slow:1b"), wl)
    finally:
        timer.join()
        sim.faults(clear=["*"])
    recs = res.stages[0].records
    # The two streams running when the GPU is lost end with Ollama's CUDA error; the
    # simulator then loads on the CPU (as Ollama falls back), so later requests succeed.
    failed = [r for r in recs if r.outcome is Outcome.ERROR]
    assert len(failed) >= 2
    assert all("CUDA error" in r.error for r in failed)
    stage = summary.summarize(res).stages[0]
    assert stage.errors == len(failed)
    assert stage.ok == len(recs) - len(failed)


class Stub:
    """An Ollama look-alike that lists one model and answers 503 to every generation."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()
        server.close()
        self.loop.run_until_complete(server.wait_closed())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                path = head.split(b" ")[1]
                status, body = self._answer(path)
                writer.write(
                    f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    @staticmethod
    def _answer(path: bytes) -> tuple[str, bytes]:
        answers: dict[bytes, Any] = {
            b"/api/version": {"version": "0.0.0-stub"},
            b"/api/tags": {"models": [{"name": "m:latest"}]},
            b"/api/ps": {"models": [{"name": "m:latest"}]},
        }
        if path in answers:
            return "200 OK", json.dumps(answers[path]).encode()
        busy = "server busy, please try again.  maximum pending requests exceeded"
        return "503 Service Unavailable", json.dumps({"error": busy}).encode()

    def __enter__(self) -> Stub:
        self.thread.start()
        self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def test_503_to_everything_is_a_report_and_a_one_line_error(tmp_path: Path) -> None:
    with Stub() as stub:
        url = f"http://127.0.0.1:{stub.port}"
        j = tmp_path / "r.json"
        rc, out, err = cli("bench", "--model", "m", "--url", url, "--concurrency", "2",
                           "--requests", "6", "--json", str(j))  # fmt: skip
    assert rc == 3
    assert "no request succeeded: 6 503 (server busy)" in out
    line = one_line_error(err)
    assert "no request succeeded" in line and "OLLAMA_MAX_QUEUE" in line
    doc = json.loads(j.read_text())
    assert doc["stages"][0]["busy_503"] == 6 and doc["stages"][0]["errors"] == 0


def test_ctrl_c_saves_partial_results(sim: SimThread, tmp_path: Path) -> None:
    j, c = tmp_path / "r.json", tmp_path / "r.csv"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OLLAMA_")}
    env["PYTHONPATH"] = SRC
    proc = subprocess.Popen(
        [sys.executable, "-m", "ollama_ops.cli.main", "bench", "--model", "slow:1b",
         "--url", sim.url, "--concurrency", "2", "--duration", "60", "--warmup", "0",
         "--output-tokens", "200", "--json", str(j), "--csv", str(c)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:

        def streaming() -> bool:
            runners = sim.state()["runners"]
            return any(r["model"] == "slow:1b" and r.get("decoding", 0) >= 2 for r in runners)

        wait_until(streaming, 30, "two streams")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "PARTIAL: interrupted after" in out
    doc = json.loads(j.read_text())
    assert doc["partial"] is True and doc["stages"][0]["cut"] == 2
    assert len(c.read_text().splitlines()) == 3
