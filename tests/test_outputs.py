"""What `simulate` writes and prints: loud failures, metrics over finished requests only, results that
describe themselves under vLLM's key names, files never half-written, a table that fits the terminal,
and a progress bar with ETA. Small runs (tens of requests), seeded, no live timing in any assertion.
"""
from __future__ import annotations

import datetime as dt
import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from specdec_sim.costmodel import load_calibration
from specdec_sim.simulator.config import SimConfig
from specdec_sim.simulator.engine import run_simulation
from specdec_sim.safe_output import write_atomic
from specdec_sim.simulator.report import (comparison_frame, failure_warnings, finished_policies, print_comparison,
                                          progress_reporter, stable_summary, write_result)
from specdec_sim.traces import bundled_trace, load_trace

FIXTURE = Path(__file__).parent / "fixtures" / "vllm_bench_serve_result.json"
RUN_INFO = {"trace": "azure-conv", "trace_path": "/x/azure-conv.csv", "trace_sha256": "ab" * 32, "rate": None,
            "burstiness": 1.0, "num_requests": 30, "time_scale": 1.0, "duration": None, "max_requests": 30,
            "max_concurrency": None, "seed": 0, "command": "simulate --trace azure-conv", "version": "0.1.0"}
SHARED_KEYS = ([f"{stat}_{metric}_ms" for metric in ("ttft", "tpot", "itl", "e2el")
                for stat in ("mean", "median", "std", "p90", "p99")]
               + ["completed", "failed", "total_input_tokens", "total_output_tokens", "request_throughput",
                  "output_throughput", "total_token_throughput", "request_goodput", "duration",
                  "date", "model_id", "num_prompts", "request_rate", "burstiness", "max_concurrency"])


def trace(name: str = "azure-conv", n: int = 30, time_scale: float = 1.0):
    return load_trace(str(bundled_trace(name)), max_requests=n, time_scale=time_scale)


def strict_json(path: Path) -> dict:
    """Parse as standard JSON: NaN/Infinity literals are refused."""
    def refuse(token: str):
        raise ValueError(f"{path}: non-standard JSON constant {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


# ---- loud failures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mooncake_runs():
    tr = trace("mooncake-conv", 40)  # long prompts: some exceed the token budget without chunked prefill (V0)
    return [run_simulation(tr, SimConfig(engine="v0"), spec, seed=0) for spec in ("none", "fixed:3")]


def test_failures_are_warned_with_count_and_reason(mooncake_runs, capsys):
    frame = comparison_frame(mooncake_runs, ["none", "fixed:3"])
    failed = int(frame.loc[1, "failed"])
    assert failed > 0
    lines = failure_warnings(frame)
    assert any(line.startswith(f"warning: fixed:3: {failed:,} of 40 requests failed (") for line in lines)
    assert "prompt longer than max_num_batched_tokens without chunked prefill" in lines[-1]
    assert lines[-1].endswith(f"speedups are over the {40 - failed:,} requests every policy completed")
    print_comparison(frame, "mooncake-conv", console=Console(width=200, file=io.StringIO()))
    assert capsys.readouterr().err.splitlines() == lines


def test_no_warning_when_everything_finishes():
    tr = trace(n=20)
    runs = [run_simulation(tr, SimConfig(), spec, seed=0) for spec in ("none", "fixed:3")]
    frame = comparison_frame(runs, ["none", "fixed:3"])
    assert failure_warnings(frame) == []
    assert frame.loc[1, "speedup_vs_none"] == pytest.approx(frame.loc[0, "mean_e2el_ms"] / frame.loc[1, "mean_e2el_ms"])


def test_speedup_is_over_requests_every_policy_completed(mooncake_runs):
    none, fixed = mooncake_runs
    finished = np.flatnonzero(fixed.requests["status"] == "finished")
    requests = fixed.requests.copy()
    requests.loc[finished[:5], "status"] = "failed"  # fixed:3 now also "failed" five requests none finished
    damaged = replace(fixed, requests=requests)
    frame = comparison_frame([none, damaged], ["none", "fixed:3"])
    both = (none.requests["status"] == "finished").to_numpy() & (requests["status"] == "finished").to_numpy()
    expected = none.requests["e2el_ms"][both].mean() / requests["e2el_ms"][both].mean()
    assert frame.loc[1, "speedup_requests"] == both.sum()
    assert frame.loc[1, "speedup_vs_none"] == pytest.approx(expected, rel=1e-12)


def test_nothing_completed_reports_null_metrics(tmp_path):
    result = run_simulation(trace(n=10), replace(SimConfig(), max_sim_time_s=1e-3), "fixed:3", seed=0)
    assert result.summary["completed"] == 0
    for key in ("mean_itl_ms", "p99_itl_ms", "mean_ttft_ms", "mean_tpot_ms", "mean_e2el_ms"):
        assert np.isnan(result.summary[key]), key
    write_result(result, tmp_path / "p", "fixed:3", 0, run_info=RUN_INFO)
    summary = strict_json(tmp_path / "p" / "summary.json")
    assert summary["mean_itl_ms"] is None and summary["median_ttft_ms"] is None and summary["completed"] == 0


# ---- ITL over finished requests only ---------------------------------------------------------------
@pytest.mark.parametrize("kv_blocks,stop_s", [(None, 3.0), (600, 5.0)])  # 600 blocks: preemptions, re-prefill gaps
def test_itl_counts_only_requests_that_finished(kv_blocks, stop_s):
    """Policy `none` emits one token per request-step, so a request's gaps are its output - 1 and sum to
    finish - first token: the exact mean ITL over finished requests is known without the recorder."""
    config = replace(SimConfig(), kv_blocks=kv_blocks, max_sim_time_s=stop_s)
    result = run_simulation(trace(n=60, time_scale=0.05), config, "none", seed=0)
    req = result.requests
    done = req["status"] == "finished"
    unfinished_with_gaps = (~done & (req["emitted_tokens"] > 1)).sum()
    assert done.sum() > 5 and unfinished_with_gaps > 0  # the case the old pooling got wrong
    if kv_blocks:
        assert result.summary["preemptions"] > 0
    gap_sum = (req["finish_s"] - req["first_token_s"])[done].sum()
    gap_count = (req["output_tokens"] - 1)[done].sum()
    assert result.summary["mean_itl_ms"] == pytest.approx(1000 * gap_sum / gap_count, rel=1e-9)


def test_itl_unchanged_when_all_finish():
    result = run_simulation(trace(n=40), SimConfig(), "none", seed=0)
    req = result.requests
    assert (req["status"] == "finished").all()
    expected = (req["finish_s"] - req["first_token_s"]).sum() / (req["output_tokens"] - 1).sum()
    assert result.summary["mean_itl_ms"] == pytest.approx(1000 * expected, rel=1e-9)


# ---- results that describe themselves ---------------------------------------------------------------
@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = run_simulation(trace(), SimConfig(), "fixed:3", seed=0)
    write_result(result, out / "fixed_3", "fixed:3", 0, run_info=RUN_INFO)
    return out, result


def test_summary_and_vllm_result_share_key_names(written):
    out, _ = written
    ours = strict_json(out / "fixed_3" / "summary.json")
    vllm = json.loads(FIXTURE.read_text())
    frame = pd.DataFrame([ours, vllm], index=["simulated", "vllm"])
    shared = set(ours) & set(vllm)
    assert set(SHARED_KEYS) <= shared, sorted(set(SHARED_KEYS) - shared)
    assert frame.loc[:, SHARED_KEYS].shape == (2, len(SHARED_KEYS))
    for key in ("date", "model_id"):
        assert all(isinstance(v, str) for v in frame[key])
    for value in frame["date"]:
        dt.datetime.strptime(value, "%Y%m%d-%H%M%S")  # vLLM's format
    assert ours["request_goodput"] is None and ours["max_concurrency"] is None
    assert ours["duration"] == ours["duration_s"] > 0


def test_summary_records_traffic_calibration_policy_and_version(written):
    out, result = written
    summary = strict_json(out / "fixed_3" / "summary.json")
    assert summary["traffic"] == {k: RUN_INFO[k] for k in summary["traffic"]}
    assert set(summary["traffic"]) >= {"trace", "trace_sha256", "rate", "burstiness", "num_requests", "time_scale",
                                       "duration", "max_concurrency"}
    cal = load_calibration(result.config.calibration)
    assert summary["calibration"] == cal.name
    assert summary["calibration_info"]["provenance"] == cal.provenance
    assert summary["calibration_info"]["description"] == cal.description
    assert summary["model_id"] == "meta-llama/Llama-3.1-8B-Instruct"  # the calibration's target model
    assert summary["policy_spec"] == "fixed:3" and summary["policy"] == result.policy_name
    assert summary["seed"] == 0 and summary["version"] == "0.1.0" and summary["command"] == RUN_INFO["command"]
    assert summary["num_prompts"] == 30 and summary["config"]["calibration"] == cal.name
    arrivals = result.requests["arrival_s"]
    assert summary["request_rate"] == pytest.approx(30 / (arrivals.max() - arrivals.min()))
    assert "request_rate_note" in summary and summary["burstiness"] is None


def test_synthetic_rate_is_written_as_given(tmp_path):
    result = run_simulation(trace(n=10), SimConfig(), "none", seed=0)
    write_result(result, tmp_path / "none", "none", 0, run_info={**RUN_INFO, "rate": 5.0, "burstiness": 0.5})
    summary = strict_json(tmp_path / "none" / "summary.json")
    assert (summary["request_rate"], summary["burstiness"]) == (5.0, 0.5) and "request_rate_note" not in summary


def test_same_run_same_stable_summary(tmp_path):
    result = run_simulation(trace(n=5), SimConfig(), "none", seed=0)
    write_result(result, tmp_path / "a", "none", 0, run_info=RUN_INFO)
    write_result(result, tmp_path / "b", "none", 0, run_info={**RUN_INFO, "command": "other", "trace_path": "/y"})
    a, b = (strict_json(tmp_path / d / "summary.json") for d in "ab")
    assert stable_summary(a) == stable_summary(b) and "date" not in stable_summary(a)


def test_date_is_reproducible_under_source_date_epoch(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "86400")
    result = run_simulation(trace(n=5), SimConfig(), "none", seed=0)
    write_result(result, tmp_path / "a", "none", 0)
    assert strict_json(tmp_path / "a" / "summary.json")["date"] == "19700102-000000"


# ---- nothing half-written -------------------------------------------------------------------------
def test_write_atomic_keeps_the_old_file_when_interrupted(tmp_path):
    target = tmp_path / "comparison.csv"
    target.write_text("old\n")

    def torn(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, torn)
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["comparison.csv"]
    write_atomic(target, lambda tmp: Path(tmp).write_text("new\n"))
    assert target.read_text() == "new\n" and len(list(tmp_path.iterdir())) == 1
    fresh = tmp_path / "plain.txt"
    fresh.write_text("x")
    assert target.stat().st_mode & 0o777 == fresh.stat().st_mode & 0o777  # not mkstemp's 0600


def test_a_signal_during_a_write_is_acted_on_once_the_file_is_complete(tmp_path):
    """Ctrl-C or SIGTERM while a file is written (a first to_parquet imports pyarrow, and an interrupt
    inside that import leaves it half-initialised) is deferred: the file completes, then it raises."""
    import signal

    target = tmp_path / "results.csv"
    seen: list[str] = []

    def write_with_a_signal_inside(tmp: str) -> None:
        signal.raise_signal(signal.SIGINT)  # to this thread: the handler runs before the next line
        seen.append("still writing")
        Path(tmp).write_text("complete\n")

    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, write_with_a_signal_inside)
    assert seen == ["still writing"] and target.read_text() == "complete\n"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is back
    write_atomic(target, lambda tmp: Path(tmp).write_text("again\n"))  # nothing pending afterwards
    assert target.read_text() == "again\n"


def test_interrupted_policy_is_not_finished(tmp_path, monkeypatch):
    result = run_simulation(trace(n=10), SimConfig(), "none", seed=0)
    write_result(result, tmp_path / "none", "none", 0)
    write_result(result, tmp_path / "fixed_3", "fixed:3", 0)
    assert finished_policies(tmp_path) == {"none", "fixed_3"}

    def interrupted(self, path, *args, **kwargs):
        Path(path).write_bytes(b"PAR1")  # a torn Parquet file, under its temporary name
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_parquet", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_result(result, tmp_path / "fixed_3", "fixed:3", 0)  # a rerun into the same directory
    assert finished_policies(tmp_path) == {"none"}
    assert sorted(p.name for p in (tmp_path / "fixed_3").iterdir()) == ["requests.csv", "steps.parquet"]
    pd.read_parquet(tmp_path / "fixed_3" / "steps.parquet")  # the previous, complete file
    (tmp_path / "fixed_3" / ".requests.csv.abc123.tmp").write_text("torn by SIGKILL")
    monkeypatch.undo()
    write_result(result, tmp_path / "fixed_3", "fixed:3", 0)
    assert sorted(p.name for p in (tmp_path / "fixed_3").iterdir()) == ["requests.csv", "steps.parquet",
                                                                         "summary.json"]


def test_finished_needs_every_listed_file(tmp_path):
    result = run_simulation(trace(n=5), SimConfig(), "none", seed=0)
    write_result(result, tmp_path / "none", "none", 0)
    write_result(replace(result, steps=None), tmp_path / "nosteps", "none", 0)  # --no-step-log, rerun
    write_result(result, tmp_path / "rerun", "none", 0)
    write_result(replace(result, steps=None), tmp_path / "rerun", "none", 0)
    assert finished_policies(tmp_path) == {"none", "nosteps", "rerun"}
    assert not (tmp_path / "rerun" / "steps.parquet").exists()  # no stale step log from the earlier run
    (tmp_path / "none" / "steps.parquet").unlink()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "summary.json").write_text('{"completed": ')
    assert finished_policies(tmp_path) == {"nosteps", "rerun"} and finished_policies(tmp_path / "missing") == set()


# ---- readable output ------------------------------------------------------------------------------
def test_table_fits_an_80_column_terminal(mooncake_runs):
    frame = comparison_frame(mooncake_runs, ["none", "fixed:3"])
    narrow, wide = io.StringIO(), io.StringIO()
    print_comparison(frame, "mooncake-conv (40 requests)", console=Console(width=80, file=narrow))
    print_comparison(frame, "mooncake-conv (40 requests)", console=Console(width=250, file=wide))
    lines = narrow.getvalue().splitlines()
    table_lines = [line for line in lines if line[:1] in "┏┃┡│└"]
    assert all(len(line) <= 80 for line in table_lines)
    assert sum(line.startswith("│ fixed:3 ") for line in table_lines) == 1  # one line per policy, no wrapping
    assert not any(line.startswith("│         ") for line in table_lines)
    assert "not shown at this width" in narrow.getvalue() and "not shown" not in wide.getvalue()
    assert "mean k" in wide.getvalue() and "speedup" in narrow.getvalue()


def test_progress_bar_appears_after_the_delay_with_eta():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with progress_reporter(100, "fixed:3", delay_s=0.0, console=console) as tick:
        tick(10)
        tick(50)
    assert "fixed:3" in out.getvalue() and "ETA" in out.getvalue()


def test_progress_bar_hidden_before_the_delay_and_when_quiet():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with progress_reporter(100, "fixed:3", delay_s=1e9, console=console) as tick:
        tick(50)
    assert out.getvalue() == ""
    with progress_reporter(100, "fixed:3", disabled=True, console=console) as tick:
        assert tick is None


def test_small_runs_call_progress_often_enough():
    calls: list[int] = []
    run_simulation(trace(n=40), SimConfig(), "none", seed=0, progress=calls.append)
    assert calls and calls[-1] == 40


class _Req:
    """What `Emissions` reads of a request in flight."""

    def __init__(self, index: int):
        self.index, self.first_token_s, self.last_token_s = index, -1.0, -1.0


def test_emissions_give_back_exact_gaps_and_stay_bounded():
    from specdec_sim.simulator.recorder import Emissions

    em, a, b = Emissions(), _Req(0), _Req(1)
    a.first_token_s = a.last_token_s = 0.0
    em.start(a)  # the scheduler reports a's first token (StepResult.started)
    b_times = []
    for t in range(1, 30_001):
        now = t * 0.01
        a.last_token_s = now
        expected = 1
        if t == 20_000:
            b.first_token_s = b.last_token_s = now
            b_times.append(now)
        elif t > 20_000 and t % 3:  # b skips every third step (a partial step)
            b.last_token_s = now
            b_times.append(now)
            expected = 2
        assert em.emitted(now, expected) == expected
        if t == 20_000:
            em.start(b)
    assert em.gaps(1) == [b_times[j] - b_times[j - 1] for j in range(1, len(b_times))]
    gaps_a = em.gaps(0)
    assert len(gaps_a) == 30_000 and gaps_a[0] == 0.01 and gaps_a[-1] == pytest.approx(0.01)
    c = _Req(2)
    c.first_token_s = c.last_token_s = 400.0
    em.start(c)
    for t in range(1, 20_001):
        c.last_token_s = 400.0 + t
        em.emitted(c.last_token_s, 1)
    assert len(em.timeline) == 20_000  # what c needs; the entries before it started are dropped
    assert len(em.gaps(2)) == 20_000


def test_simulate_cli_writes_self_describing_summaries(tmp_path, capsys):
    from specdec_sim.simulator.cli import main

    code = main(["--trace", "mooncake-conv", "--max-requests", "20", "--policy", "none", "--policy", "fixed:3",
                 "--out", str(tmp_path), "--quiet"])
    assert code == 0
    summary = strict_json(tmp_path / "fixed_3" / "summary.json")
    assert summary["traffic"]["trace"] == "mooncake-conv" and len(summary["traffic"]["trace_sha256"]) == 64
    assert summary["traffic"]["max_requests"] == 20 and summary["num_prompts"] == 20
    assert finished_policies(tmp_path) == {"none", "fixed_3"}
    comparison = pd.read_csv(tmp_path / "comparison.csv")
    assert {"speedup_vs_none", "speedup_requests", "failure_reasons"} <= set(comparison.columns)
    if summary["failed"]:
        assert "requests failed" in capsys.readouterr().err
