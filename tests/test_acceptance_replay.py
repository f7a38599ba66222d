"""`simulate --acceptance-trace`: exact replay against a hand-computed one, record assignment, n-gram matches,
profile sampling, and one-line errors. All traces are tiny hand-made files in tmp_path."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from specdec_sim.simulator.cli import main as simulate
from specdec_sim.simulator.config import SimConfig
from specdec_sim.simulator.engine import run_simulation
from specdec_sim.acceptance.records import AcceptanceRecord, write_acceptance_trace
from specdec_sim.acceptance.spans import replay_steps
from specdec_sim.traces.model import Trace

RECORDS = [AcceptanceRecord("a", 10, 9, [3, 2, 1, 4, 3, 2, 1, 1, 1]),
           AcceptanceRecord("b", 6, 5, [1, 5, 4, 3, 2]),
           AcceptanceRecord("c", 4, 1, [1])]
ORDER = ["a", "b", "a", "c"]  # several requests may replay one record


def files(tmp_path: Path) -> tuple[Path, Path]:
    acc = write_acceptance_trace(tmp_path / "acc.jsonl", RECORDS)
    by_id = {r.id: r for r in RECORDS}
    rows = [f"{i},0.0,{by_id[name].prompt_tokens},{by_id[name].output_tokens},{name}" for i, name in enumerate(ORDER)]
    req = tmp_path / "requests.csv"
    req.write_text("request_id,arrival_time_s,prompt_tokens,output_tokens,acceptance_id\n" + "\n".join(rows) + "\n")
    return acc, req


def run(tmp_path: Path, *extra: str) -> tuple[int, Path]:
    acc, req = files(tmp_path)
    out = tmp_path / "out"
    code = simulate(["--trace", str(req), "--acceptance-trace", str(acc), "--max-num-seqs", "1",
                     "--max-num-batched-tokens", "8192", "--out", str(out), "--quiet", *extra])
    return code, out


def test_closed_batch_of_one_matches_the_hand_replay(tmp_path: Path):
    code, out = run(tmp_path, "--policy", "fixed:2")
    assert code == 0
    # by hand, k = 2: a: prefill 1, then 3, 3, 1, 1 (spans[0]=3, spans[3]=4 capped at 3, spans[6]=1, spans[7]=1);
    # b: prefill 1, then 1, 3 (spans[0]=1, spans[1]=5 capped by the 3 tokens left); c: its prefill is all
    assert replay_steps(RECORDS[0].spans, 2) == [3, 3, 1, 1] and replay_steps(RECORDS[1].spans, 2) == [1, 3]
    steps = pd.read_parquet(out / "fixed_2" / "steps.parquet")
    assert steps["emitted"].tolist() == [1, 3, 3, 1, 1, 1, 1, 3, 1, 3, 3, 1, 1, 1]
    requests = pd.read_csv(out / "fixed_2" / "requests.csv")
    assert requests["steps"].tolist() == [5, 3, 5, 1]  # the prefill step plus the decode steps
    assert requests["emitted_tokens"].tolist() == [9, 5, 9, 1]
    summary = json.loads((out / "fixed_2" / "summary.json").read_text())
    # the server knows no EOS in advance, so every decode step proposes 2: a drafts 4 times, b twice
    assert summary["spec_decode_num_drafts"] == 10 and summary["spec_decode_draft_tokens"] == 20
    assert summary["spec_decode_accepted_tokens"] == 10  # a: 2 + 2 + 0 + 0, twice; b: 0 + 2
    assert summary["spec_decode_per_position_acceptance_rates"] == pytest.approx([5 / 10, 5 / 10])


def test_ngram_steps_with_a_span_of_one_find_no_match(tmp_path: Path):
    code, out = run(tmp_path, "--policy", "fixed:2", "--style", "ngram")
    assert code == 0
    requests = pd.read_csv(out / "fixed_2" / "requests.csv")
    assert requests["steps"].tolist() == [5, 3, 5, 1]  # a span of 1 emits one token either way
    summary = json.loads((out / "fixed_2" / "summary.json").read_text())
    # only steps whose span is >= 2 verify drafts: a's first two steps (twice), b's second
    assert summary["spec_decode_num_drafts"] == 5 and summary["spec_decode_accepted_tokens"] == 10
    assert summary["spec_decode_acceptance_length"] == pytest.approx(3.0)


def test_tree_steps_accept_along_the_best_path(tmp_path: Path):
    from specdec_sim.acceptance.tree import chain_depth

    code, out = run(tmp_path, "--policy", "fixed:4", "--style", "tree")
    assert code == 0
    steps = pd.read_parquet(out / "fixed_4" / "steps.parquet")
    decode = steps[steps["num_prefill"] == 0]
    assert (decode["accepted"] <= decode["proposed"]).all()
    assert steps["emitted"].sum() == 24 and 1 <= chain_depth(0.5, 4) <= 4


def test_errors_are_one_line(tmp_path: Path, capsys):
    acc, req = files(tmp_path)
    req.write_text(req.read_text().replace(",c\n", ",zz\n"))
    code = simulate(["--trace", str(req), "--acceptance-trace", str(acc), "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "acceptance_id 'zz'" in err and err.strip().count("\n") == 0
    code = simulate(["--trace", str(req), "--acceptance-trace", str(tmp_path / "none.jsonl"), "--quiet",
                     "--out", str(tmp_path / "o2")])
    assert code == 2 and "none.jsonl" in capsys.readouterr().err
    code = simulate(["--trace", str(req), "--acceptance-trace", str(acc), "--acceptance-profile", "gsm8k-eagle",
                     "--quiet", "--out", str(tmp_path / "o3")])
    assert code == 2 and "not both" in capsys.readouterr().err


def lengths_trace(n: int, output: int = 9) -> Trace:
    return Trace(np.arange(n), np.zeros(n), np.full(n, 10), np.full(n, output), "test")


def test_without_acceptance_ids_records_are_dealt_evenly_and_seeded(tmp_path: Path):
    acc = write_acceptance_trace(tmp_path / "acc.jsonl", [
        AcceptanceRecord(str(i), 10, 9, [s] * 9) for i, s in enumerate([1, 2, 4])])
    config = SimConfig(acceptance_trace=str(acc), max_num_seqs=1, max_num_batched_tokens=8192)
    first = run_simulation(lengths_trace(6), config, "fixed:3", seed=5).requests
    again = run_simulation(lengths_trace(6), config, "fixed:3", seed=5).requests
    pd.testing.assert_frame_equal(first, again)
    # spans of a constant s give steps of s tokens: 8 decode tokens take 8, 4 or 2 steps; each record twice
    assert sorted(first["steps"].tolist()) == [3, 3, 5, 5, 9, 9]
    other = run_simulation(lengths_trace(6), config, "fixed:3", seed=6).requests
    assert sorted(other["steps"].tolist()) == [3, 3, 5, 5, 9, 9]


def test_profile_sampling_gives_each_request_its_own_acceptance():
    config = SimConfig(acceptance_profile="sharegpt-eagle", max_num_batched_tokens=8192)
    a = run_simulation(lengths_trace(40, 200), config, "fixed:3", seed=1)
    b = run_simulation(lengths_trace(40, 200), config, "fixed:3", seed=1)
    pd.testing.assert_frame_equal(a.requests, b.requests)
    assert a.requests["alpha"].nunique() > 20  # per-request processes
    assert 1.8 < a.summary["spec_decode_acceptance_length"] < 2.8  # ShareGPT EAGLE replays at AL 2.25 for k = 3
    ngram = run_simulation(lengths_trace(40, 200), SimConfig(acceptance_profile="sharegpt-ngram", style="ngram",
                                                               max_num_batched_tokens=8192), "fixed:3", seed=1)
    # prompt lookup: most steps find no match, so far fewer drafts than decode steps
    assert ngram.summary["spec_decode_num_drafts"] < 0.5 * (ngram.requests["steps"].sum() - 40)


def test_an_acceptance_trace_is_its_own_request_trace(tmp_path: Path):
    acc = write_acceptance_trace(tmp_path / "acc.jsonl.gz", RECORDS[:2])
    out = tmp_path / "out"
    assert simulate(["--trace", str(acc), "--policy", "fixed:2", "--max-num-seqs", "1", "--out", str(out),
                     "--quiet"]) == 0
    requests = pd.read_csv(out / "fixed_2" / "requests.csv")
    assert requests["output_tokens"].tolist() == [9, 5] and requests["steps"].tolist() == [5, 3]  # replayed
    assert simulate(["--trace", str(acc), "--rate", "2", "--num-requests", "5", "--policy", "fixed:2",
                     "--out", str(tmp_path / "rate"), "--quiet"]) == 0
    timed = pd.read_csv(tmp_path / "rate" / "fixed_2" / "requests.csv")
    assert timed["output_tokens"].tolist() == [9, 5, 9, 5, 9]  # records in file order, cycling
    assert timed["arrival_s"].is_monotonic_increasing and timed["arrival_s"].iloc[-1] > 0


HOSTILE_ACCEPTANCE = {  # name -> (option, file name or value, content or None)
    "binary": ("--acceptance-trace", "bin.jsonl", bytes(range(256)) * 8),
    "truncated_gzip": ("--acceptance-trace", "cut.jsonl.gz", b"\x1f\x8b\x08\x00" + b"\x00" * 20),
    "span_zero": ("--acceptance-trace", "zero.jsonl",
                  b'{"id": "a", "prompt_tokens": 4, "output_tokens": 2, "spans": [0, 1]}\n'),
    "spans_too_short": ("--acceptance-trace", "short.jsonl",
                        b'{"id": "a", "prompt_tokens": 4, "output_tokens": 3, "spans": [1, 1]}\n'),
    "not_an_object": ("--acceptance-trace", "list.jsonl", b"[1, 2, 3]\n"),
    "directory": ("--acceptance-trace", "{tmp}", None),
    "dev_zero": ("--acceptance-trace", "/dev/zero", None),
    "unknown_profile": ("--acceptance-profile", "no-such-profile", None),
    "profile_not_json": ("--acceptance-profile", "p.json", b"{not json"),
    "profile_wrong_shape": ("--acceptance-profile", "q.json", b'{"name": "x", "version": 1}'),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_ACCEPTANCE))
def test_hostile_acceptance_inputs_are_one_line_errors(tmp_path: Path, capsys, case):
    option, name, content = HOSTILE_ACCEPTANCE[case]
    value = name.replace("{tmp}", str(tmp_path))
    if content is not None:
        (tmp_path / name).write_bytes(content)
        value = str(tmp_path / name)
    code = simulate(["--trace", "azure-conv", "--max-requests", "5", option, value, "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_an_unknown_spans_field_is_refused(tmp_path: Path, capsys):
    acc, req = files(tmp_path)
    code = simulate(["--trace", str(req), "--acceptance-trace", str(acc), "--spans-field", "medusa_spans", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "medusa_spans" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("policy", ["goodput-greedy", "smartspec", "turbospec:counting=position"])
def test_policies_never_see_future_spans(tmp_path: Path, policy):
    """Two acceptance traces equal up to span index 40 and different after: every decision taken before a step
    reads a span at index >= 40 is the same (a policy knows past accepted counts only)."""
    rng = np.random.default_rng(4)
    head = [int(v) for v in rng.integers(1, 6, 40)]
    runs = []
    for seed in (1, 2):
        tail = [int(v) for v in np.random.default_rng(seed).integers(1, 8, 160)]
        acc = write_acceptance_trace(tmp_path / f"acc{seed}.jsonl", [AcceptanceRecord("r", 50, 200, head + tail)])
        trace = Trace(np.arange(1), np.zeros(1), np.array([50]), np.array([200]), "one request")
        config = SimConfig(acceptance_trace=str(acc), record_steps=True)
        steps = run_simulation(trace, config, policy, seed=0).steps
        decode = steps[steps.num_decode > 0]
        position = decode.emitted.cumsum().shift(fill_value=0).to_numpy()  # span index each decode step reads
        runs.append((decode.k_max.to_numpy(), position))
    (k1, pos1), (k2, pos2) = runs
    safe = int(np.argmax(pos1 >= 40))  # decode steps before the first read of a differing span
    assert safe > 5
    np.testing.assert_array_equal(k1[:safe + 1], k2[:safe + 1])  # that step's k is chosen before its span is read
    np.testing.assert_array_equal(pos1[:safe + 1], pos2[:safe + 1])
