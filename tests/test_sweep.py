"""Sweep runner: grid expansion, local process pool and Dask execution, resume, failures, plots."""
from __future__ import annotations

import json
from dataclasses import replace

import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from specdec_sim.simulator.sweep.capacity import CapacityTask, ProbeSpec, capacity_task, capacity_tasks
from specdec_sim.simulator.config import ConfigError
from specdec_sim.simulator.sweep.plots import plot_sweep, plot_timeline, speedup_table, mean_over_seeds
from specdec_sim.simulator.sweep.runner import (RunSpec, SweepSpec, execute_run, expand_grid, run_sweep, run_tasks,
                             simulate, stable_hash)

SMALL = dict(traces=["sharegpt"], max_requests=60)
CONFIG_COLUMNS = {"run_id", "status", "error", "wall_s", "trace", "policy", "rate", "time_scale",
                  "calibration", "replicas", "seed", "max_requests", "trace_duration_s"}
METRICS = {"completed", "failed", "duration_s", "request_throughput", "output_throughput",
           "mean_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "p99_e2el_ms", "mean_e2el_ms", "mean_k",
           "mean_acceptance_length", "draft_acceptance_rate", "spec_goodput_tok_s", "offered_rate"}


def small_spec(**kw) -> SweepSpec:
    return SweepSpec(**{**SMALL, **kw})


def test_grid_is_cartesian_with_stable_ids():
    spec = small_spec(policies=["none", "fixed:3", "fixed:2"], time_scales=[1.0, 4.0], seeds=[0, 1])
    runs = expand_grid(spec)
    assert len(runs) == 12 and len({r.run_id for r in runs}) == 12
    assert [r.run_id for r in expand_grid(spec)] == [r.run_id for r in runs]
    # a rate replaces the trace timing, so time scales collapse for rate runs
    assert len(expand_grid(small_spec(rates=[1.0, 2.0], time_scales=[1.0, 4.0]))) == 2
    # the id depends on content only (fixed literal guards against accidental changes of the hash)
    assert stable_hash({"b": 1, "a": [1, 2]}) == stable_hash({"a": [1, 2], "b": 1})
    assert RunSpec("sharegpt").run_id != RunSpec("sharegpt", seed=1).run_id


def test_spec_validation_is_one_line_config_error():
    for bad in (dict(policies=[]), dict(rates=[-1.0]), dict(time_scales=[0.0]),
                dict(max_requests=0), dict(engine={"no_such_option": 1}), dict(replicas=[0]),
                dict(traces=["synthetic"]), dict(rates=[float("nan")]), dict(rates=[float("inf")]),
                dict(time_scales=[float("nan")]), dict(time_scales=[float("inf")]),
                dict(engine_axes={"acceptance": []}), dict(engine_axes={"max_k": [3, -1]})):
        with pytest.raises(ConfigError):
            small_spec(**bad).validate()


def test_local_process_pool_sweep_and_resume(tmp_path):
    spec = small_spec(policies=["none", "fixed:3"], rates=[2.0, 6.0], seeds=[0])
    df = run_sweep(spec, tmp_path, workers=2, progress=False)
    assert len(df) == 4 and set(df["status"]) == {"ok"}
    assert CONFIG_COLUMNS | METRICS <= set(df.columns)
    assert (df["completed"] == 60).all() and (df["error"] == "").all()
    for name in ("results.parquet", "results.csv"):
        table = pd.read_parquet(tmp_path / name) if name.endswith("parquet") else pd.read_csv(tmp_path / name)
        assert sorted(table["run_id"]) == sorted(df["run_id"])
    fixed = df[df["policy"] == "fixed:3"]
    assert (fixed["mean_k"] > 2.5).all() and (df[df["policy"] == "none"]["mean_k"] == 0).all()

    # resume: a second invocation with one more seed runs only the new runs
    seen: list[dict] = []
    df2 = run_tasks(expand_grid(replace(spec, seeds=[0, 1])), tmp_path, workers=0, progress=False,
                    on_row=seen.append)
    assert len(seen) == 4 and {r["seed"] for r in seen} == {1}
    assert len(df2) == 8
    again: list[dict] = []
    run_tasks(expand_grid(spec), tmp_path, workers=2, progress=False, on_row=again.append)
    assert again == []
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 8


def test_same_run_is_deterministic():
    run = RunSpec("sharegpt", policy="fixed:3", rate=4.0, max_requests=60, seed=3)
    a, b = execute_run(run), execute_run(run)
    assert a["status"] == "ok"
    for key in ("mean_e2el_ms", "p99_ttft_ms", "mean_k", "output_throughput"):
        assert a[key] == b[key]


def test_failures_are_recorded_and_others_complete(tmp_path):
    good = RunSpec("sharegpt", policy="fixed:2", rate=4.0, max_requests=60)
    runs = [good, replace(good, policy="no-such-policy"), replace(good, trace=str(tmp_path / "missing.csv")),
            replace(good, engine=(("max_k", -5),))]
    df = run_tasks(runs, tmp_path / "out", workers=2, progress=False).set_index("run_id")
    assert df.loc[good.run_id, "status"] == "ok"
    for bad in runs[1:]:
        row = df.loc[bad.run_id]
        assert row["status"] == "error" and "\n" not in row["error"] and row["error"]
    assert "no-such-policy" in df.loc[runs[1].run_id, "error"]
    assert "max-k" in df.loc[runs[3].run_id, "error"]
    # failed runs are retried on resume, finished ones are not
    retried: list[dict] = []
    run_tasks(runs, tmp_path / "out", workers=0, progress=False, on_row=retried.append)
    assert sorted(r["run_id"] for r in retried) == sorted(r.run_id for r in runs[1:])


def test_dask_local_cluster_sweep(tmp_path):
    distributed = pytest.importorskip("distributed")
    spec = small_spec(policies=["none", "fixed:3"], rates=[3.0], seeds=[0, 1])
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        df = run_sweep(spec, tmp_path, dask=client, progress=False)
        assert len(df) == 4 and set(df["status"]) == {"ok"}
        df_addr = run_sweep(replace(spec, seeds=[2]), tmp_path, dask=cluster.scheduler_address, progress=False)
    assert len(df_addr) == 6 and set(df_addr["status"]) == {"ok"}
    local = execute_run(expand_grid(spec)[0])
    remote = df.set_index("run_id").loc[local["run_id"]]
    assert remote["mean_e2el_ms"] == local["mean_e2el_ms"]


def test_capacity_on_the_simulator_is_deterministic(tmp_path):
    base = RunSpec("sharegpt", policy="none", max_requests=60)
    probe = ProbeSpec(requests=60, duration_s=5.0, warmup=0.25)
    task = CapacityTask(base, (("p99_e2el_ms", 12000.0),), lo=0.5, hi=24.0, tol=1.0, probe=probe)
    row = capacity_task(task)
    assert row["status"] == "ok", row["error"]
    assert row["search_status"] in ("ok", "above-bracket", "below-bracket")
    assert 0.0 <= row["capacity_rps"] <= 24.0
    if row["search_status"] == "ok":
        assert row["bracket_hi"] - row["bracket_lo"] <= 1.0
        assert row["at_capacity_p99_e2el_ms"] <= 12000.0
    assert capacity_task(task)["capacity_rps"] == row["capacity_rps"]
    tasks = capacity_tasks(expand_grid(small_spec(policies=["none", "fixed:3"], rates=[1.0, 2.0])),
                           {"p99_e2el_ms": 12000.0}, 0.5, 24.0, 1.0, probe=probe)
    assert len(tasks) == 2
    df = run_tasks(tasks, tmp_path, capacity_task, workers=2, progress=False, name="capacity")
    assert (tmp_path / "capacity.parquet").exists() and set(df["status"]) == {"ok"}


def test_plots_written(tmp_path):
    spec = small_spec(policies=["none", "fixed:3"], rates=[2.0, 8.0])
    df = run_sweep(spec, tmp_path / "runs", workers=0, progress=False)
    paths = plot_sweep(df, tmp_path / "fig")
    assert {p.name.split("_")[-3] for p in paths} >= {"latency", "speedup"}
    assert all(p.stat().st_size > 5000 for p in paths)
    sp = speedup_table(df)
    assert set(sp["policy"]) == {"fixed:3"} and (sp["speedup"] > 0).all()
    steps = simulate(expand_grid(spec)[1], record_steps=True).steps
    out = plot_timeline(steps, tmp_path / "fig" / "timeline.png", title="fixed:3")
    assert out.stat().st_size > 5000
    with pytest.raises(ValueError):
        plot_timeline(None, tmp_path / "x.png")


def test_journal_survives_a_cut_line(tmp_path):
    run = RunSpec("sharegpt", policy="none", rate=2.0, max_requests=60)
    run_tasks([run], tmp_path, workers=0, progress=False)
    with (tmp_path / "runs.jsonl").open("a") as fh:
        fh.write(json.dumps({"run_id": "x"})[:7])  # an interrupted write
    seen: list[dict] = []
    other = replace(run, seed=1)
    df = run_tasks([run, other], tmp_path, workers=0, progress=False, on_row=seen.append)
    assert [r["run_id"] for r in seen] == [other.run_id] and len(df) == 2
    again: list[dict] = []
    assert len(run_tasks([run, other], tmp_path, workers=0, progress=False, on_row=again.append)) == 2
    assert again == []


def test_journal_with_bad_lines_resumes_with_one_warning(tmp_path, capsys):
    run = RunSpec("sharegpt", policy="none", rate=2.0, max_requests=60)
    run_tasks([run], tmp_path, workers=0, progress=False)
    good = (tmp_path / "runs.jsonl").read_text()
    (tmp_path / "runs.jsonl").write_text("not json at all\n[1, 2]\n{\"no_id\": 1}\n" + good + "\x00\xff{\n")
    seen: list[dict] = []
    df = run_tasks([run], tmp_path, workers=0, progress=False, on_row=seen.append)
    err = capsys.readouterr().err.strip().splitlines()
    assert seen == [] and len(df) == 1
    assert len(err) == 1 and "skipped 4 unreadable line(s)" in err[0] and "line 1" in err[0]


def test_engine_axis_expands_and_keeps_single_valued_run_ids():
    single = expand_grid(small_spec(rates=[2.0], engine={"max_k": 5, "acceptance": 0.5}))
    swept = expand_grid(small_spec(rates=[2.0], engine={"max_k": 5}, engine_axes={"acceptance": [0.5, 0.8]}))
    assert len(swept) == 2 and {dict(r.engine)["acceptance"] for r in swept} == {0.5, 0.8}
    assert single[0].run_id in {r.run_id for r in swept}
    # a run of the committed experiment (experiments/smartspec_sharegpt, first journal line) keeps its id
    engine = {"acceptance": 0.5, "engine": "v0", "kv_watermark": 0.0, "max_k": 7, "oracle_lengths": True,
              "policy_calibration": "same"}
    committed = RunSpec(trace="sharegpt-300-long-outputs", policy="none", rate=1.0, max_requests=1000,
                        calibration="turbospec-llama3-8b-eagle-h100", engine=tuple(sorted(engine.items())))
    assert committed.run_id == "73f5cd62ff62a5b1"
    assert expand_grid(SweepSpec(traces=["sharegpt-300-long-outputs"], rates=[1.0], max_requests=1000,
                                 calibrations=["turbospec-llama3-8b-eagle-h100"], engine=engine))[0].run_id \
        == "73f5cd62ff62a5b1"


def test_summaries_give_mean_std_and_seed_count(tmp_path):
    spec = small_spec(policies=["none", "fixed:3"], rates=[2.0, 8.0], seeds=[0, 1, 2])
    df = run_sweep(spec, tmp_path, workers=0, progress=False)
    table = mean_over_seeds(df)
    assert len(table) == 4 and (table["seeds"] == 3).all()
    for m in ("mean_e2el_ms", "p99_e2el_ms"):
        rows = df[(df["policy"] == "fixed:3") & (df["rate"] == 8.0)][m]
        got = table[(table["policy"] == "fixed:3") & (table["rate"] == 8.0)]
        assert got[m].iloc[0] == pytest.approx(rows.mean()) and got[f"{m}_std"].iloc[0] == pytest.approx(rows.std())
    sp = speedup_table(df)
    assert {"speedup", "speedup_std", "seeds"} <= set(sp.columns) and (sp["speedup_std"] >= 0).all()
    assert (sp["speedup_std"] > 0).any()  # three different seeds do not give identical ratios


def test_time_scale_sweep_plots_against_offered_rate(tmp_path):
    spec = small_spec(traces=["azure-conv"], policies=["none", "fixed:2"], time_scales=[1.0, 0.25])
    df = run_sweep(spec, tmp_path / "runs", workers=0, progress=False)
    assert set(df["status"]) == {"ok"} and df["rate"].isna().all()
    by_scale = df.groupby("time_scale")["offered_rate"].mean()
    assert by_scale[0.25] == pytest.approx(4 * by_scale[1.0], rel=1e-6)
    paths = plot_sweep(df, tmp_path / "fig")
    assert len(paths) == 2 and all(p.exists() for p in paths)


@settings(max_examples=40, deadline=None)
@given(field_name=st.sampled_from(["trace", "policy", "rate", "time_scale", "calibration", "replicas",
                                   "seed", "max_requests", "trace_duration_s", "engine"]))
def test_run_id_changes_with_every_field(field_name):
    base = RunSpec("sharegpt", policy="fixed:3", rate=2.0, max_requests=60, engine=(("max_k", 5),))
    changed = {"trace": "azure-conv", "policy": "fixed:2", "rate": 3.0, "time_scale": 2.0,
               "calibration": "llama3-70b-tp4-ngram-h100", "replicas": 2, "seed": 1, "max_requests": 61,
               "trace_duration_s": 10.0, "engine": (("max_k", 6),)}[field_name]
    assert replace(base, **{field_name: changed}).run_id != base.run_id
    assert replace(base).run_id == base.run_id


def test_engine_cannot_override_an_axis():
    with pytest.raises(ConfigError, match="sweep axis"):
        small_spec(engine={"calibration": "x"}).validate()


def _die(run: RunSpec) -> dict:
    """A task whose worker process dies (as on an out-of-memory kill)."""
    if run.seed == 1:
        import os

        os._exit(3)
    return execute_run(run)


def test_dead_worker_is_recorded_not_fatal(tmp_path):
    runs = expand_grid(small_spec(policies=["none"], rates=[2.0], seeds=[0, 1]))
    df = run_tasks(runs, tmp_path, fn=_die, workers=1, progress=False).set_index("seed")
    assert df.loc[1, "status"] == "error" and "worker failed" in df.loc[1, "error"]


def test_axes_cover_the_data_and_titles_carry_units(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from specdec_sim.simulator.sweep import plots

    figures: list = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    rows = [{"status": "ok", "trace": "t", "calibration": "c", "replicas": 1, "policy": p, "rate": r, "seed": s,
             "mean_e2el_ms": (1.0 + r) * 1000 * ((1.3 + 0.1 * s) if p == "none" else 1.0) * (1 + 0.05 * s),
             "p99_e2el_ms": (2.0 + r * 3) * 1000 * (1 + 0.1 * s)}
            for p in ("none", "fixed:3") for r in (1.0, 7.0, 63.0) for s in (0, 1)]
    df = pd.DataFrame(rows)
    plots.plot_latency_vs_rate(df, tmp_path / "a.png")
    plots.plot_speedup_vs_rate(df, tmp_path / "b.png")
    latency, speedup = figures
    assert "req/s" in latency._suptitle.get_text() and "2 seeds" in latency._suptitle.get_text()
    assert "req/s" in speedup._suptitle.get_text()
    for ax, data in ((latency.axes[1], df["p99_e2el_ms"] / 1000), (speedup.axes[0], None)):
        lo, hi = ax.get_xlim()
        assert lo <= 1.0 and hi >= 63.0
        visible = [t for t in ax.get_xticks() if lo - 1e-9 <= t <= hi + 1e-9]
        assert max(visible) >= 63.0  # a labelled tick at or beyond the largest rate
        if data is not None:
            ylo, yhi = ax.get_ylim()
            yticks = [t for t in ax.get_yticks() if ylo * (1 - 1e-9) <= t <= yhi * (1 + 1e-9)]
            assert ylo <= data.min() and yhi >= data.max() * 1.1 and max(yticks) >= data.max() * 1.1
        assert ax.collections  # the ±std bands
    for fig in figures:
        plt.close(fig)


def test_nice_log_ticks_enclose_the_range():
    from specdec_sim.simulator.sweep.plots import _nice_log_ticks

    for lo, hi in ((0.3, 47.0), (1.0, 1.0), (0.012, 0.013), (5.0, 5000.0)):
        ticks = _nice_log_ticks(lo, hi)
        assert ticks[0] <= lo and ticks[-1] >= hi and ticks == sorted(ticks)
