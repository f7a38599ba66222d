"""`measure-acceptance` end to end: n-gram and draft-model spans, resumable output, one-line errors.

The draft-model tests use tiny random-weight models built from bundled configs on CPU (skipped
without torch): a draft identical to the target accepts everything, so every span is the closed form
min(k + 1, tokens left + 1); an unrelated draft stays near 1.
"""
from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specdec_sim.profiler import acceptance_cli as cli
from specdec_sim.profiler.acceptance_spans import spans_from_hits
from specdec_sim.acceptance.ngram_spans import NgramSettings, ngram_spans
from specdec_sim.safe_output import Terminated
from specdec_sim.acceptance.records import load_acceptance_trace


def write_prompts(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def id_rows(n=5, seed=0, with_output=True, vocab=1024):
    """Prompts with outputs that partly copy them (so n-gram lookup has runs to find)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        prompt = rng.integers(0, vocab, int(rng.integers(6, 30))).tolist()
        row = {"id": f"r{i}", "prompt_ids": prompt}
        if with_output:
            row["output_ids"] = rng.integers(0, vocab, 3).tolist() + prompt[1:9] + rng.integers(0, vocab, 4).tolist()
        rows.append(row)
    return rows


def records(path):
    return {r.id: r for r in load_acceptance_trace(path)}


def test_spans_from_hits_is_the_run_of_hits_capped():
    assert spans_from_hits(np.array([True, True, False, True, False]), 8).tolist() == [3, 2, 1, 2, 1, 1]
    assert spans_from_hits(np.array([True, True, False, True, False]), 1).tolist() == [2, 2, 1, 2, 1, 1]
    assert spans_from_hits(np.ones(4, bool), 8).tolist() == [5, 4, 3, 2, 1]
    assert spans_from_hits(np.zeros(0, bool), 8).tolist() == [1]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(hit=st.lists(st.booleans(), max_size=40), k=st.integers(1, 6))
def test_draft_spans_fall_by_one_along_an_accepted_run(hit, k):
    spans = spans_from_hits(np.array(hit, dtype=bool), k).tolist()
    n = len(spans)
    assert all(1 <= s <= min(k + 1, n - i) for i, s in enumerate(spans)) and spans[-1] == 1
    for i in range(n - 1):
        if 1 < spans[i] <= k:  # not capped by k: the next step continues the same run
            assert spans[i + 1] == spans[i] - 1
        assert (spans[i] > 1) == hit[i]


def test_ngram_cli_writes_the_lookup_spans(tmp_path, capsys):
    rows = id_rows()
    prompts = write_prompts(tmp_path / "p.jsonl", rows)
    out = tmp_path / "ngram.jsonl"
    argv = ["--prompts", str(prompts), "--method", "ngram", "--prompt-lookup-min", "2", "--prompt-lookup-max",
            "3", "--max-k", "5", "--out", str(out), "--quiet"]
    assert cli.main(argv) == 0
    got = records(out)
    assert list(got) == [r["id"] for r in rows]
    for r in rows:
        want = ngram_spans(r["prompt_ids"], r["output_ids"], NgramSettings(2, 3, 5))
        assert got[r["id"]].spans.tolist() == want.tolist()
        assert (got[r["id"]].prompt_tokens, got[r["id"]].output_tokens) == (len(r["prompt_ids"]), len(r["output_ids"]))
    assert any(s > 1 for r in got.values() for s in r.spans)  # the copied blocks were found
    assert "mean acceptance length at k=5" in capsys.readouterr().out


def test_resume_after_a_torn_line_gives_the_same_file(tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", id_rows(6))
    out = tmp_path / "ngram.jsonl"
    argv = ["--prompts", str(prompts), "--method", "ngram", "--out", str(out), "--quiet"]
    assert cli.main(argv) == 0
    full = out.read_bytes()
    lines = full.splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:3]) + lines[3][:17])  # killed while writing the fourth record
    assert cli.main(argv) == 0
    assert out.read_bytes() == full
    assert cli.main(argv) == 0  # nothing left to do: unchanged
    assert out.read_bytes() == full


def test_interrupt_keeps_finished_records_and_resumes(tmp_path, monkeypatch):
    prompts = write_prompts(tmp_path / "p.jsonl", id_rows(5))
    out = tmp_path / "ngram.jsonl.gz"
    argv = ["--prompts", str(prompts), "--method", "ngram", "--out", str(out), "--quiet"]
    assert cli.main(argv) == 0
    clean = records(out)
    out.unlink()
    calls = []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 3:
            raise Terminated  # SIGTERM, as profile-gpu raises it
        return ngram_spans(*args)

    monkeypatch.setattr(cli, "ngram_spans", interrupted)
    assert cli.main(argv) == 143
    partial = tmp_path / "ngram.jsonl.gz.partial.jsonl"
    assert not out.exists() and len(records(partial)) == 2
    monkeypatch.setattr(cli, "ngram_spans", ngram_spans)
    assert cli.main(argv) == 0
    assert not partial.exists()
    resumed = records(out)
    assert list(resumed) == list(clean)
    assert all(resumed[i].spans.tolist() == clean[i].spans.tolist() for i in clean)
    with gzip.open(out, "rt") as fh:
        assert sum(1 for _ in fh) == 5


def test_parquet_output_holds_the_same_records(tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", id_rows(4))
    for name in ("o.jsonl", "o.parquet"):
        assert cli.main(["--prompts", str(prompts), "--method", "ngram", "--out", str(tmp_path / name), "--quiet"]) == 0
    a, b = records(tmp_path / "o.jsonl"), records(tmp_path / "o.parquet")
    assert list(a) == list(b) and all(a[i].spans.tolist() == b[i].spans.tolist() for i in a)
    assert not (tmp_path / "o.parquet.partial.jsonl").exists()


def test_a_resumed_file_of_other_requests_is_refused(tmp_path, capsys):
    out = tmp_path / "ngram.jsonl"
    first = write_prompts(tmp_path / "a.jsonl", id_rows(3, seed=0))
    assert cli.main(["--prompts", str(first), "--method", "ngram", "--out", str(out), "--quiet"]) == 0
    other = write_prompts(tmp_path / "b.jsonl", id_rows(3, seed=5))
    assert cli.main(["--prompts", str(other), "--method", "ngram", "--out", str(out), "--quiet"]) == 2
    assert "already in" in capsys.readouterr().err


def test_text_prompts_go_through_a_local_tokenizer(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    words = ["[UNK]", "the", "cat", "sat", "on", "mat", "a", "dog"]
    model = tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]")
    tok = tokenizers.Tokenizer(model)
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(tmp_path / "tok")
    prompts = write_prompts(tmp_path / "p.jsonl", [{"id": 1, "prompt": "the cat sat on the mat",
                                                    "output": "a cat sat on the dog"}])
    out = tmp_path / "t.jsonl"
    argv = ["--prompts", str(prompts), "--method", "ngram", "--tokenizer", str(tmp_path / "tok"), "--out", str(out),
            "--quiet"]
    assert cli.main(argv) == 0
    # ids: prompt 1 2 3 4 1 5, output 6 2 3 4 1 7: after "cat" the lookup proposes "sat on the mat"
    assert records(out)["1"].spans.tolist() == [1, 4, 3, 2, 1, 1]


@pytest.mark.parametrize("rows,extra,needle", [
    (None, [], "file not found"),
    ("{\"id\": 1, \"prompt_ids\": [1], \"output_ids\": [2]}\n{bad json\n", [], "p.jsonl: line 2: bad JSON"),
    ([{"prompt_ids": [1], "output_ids": [2]}], [], "line 1: missing field 'id'"),
    ([{"id": 1, "output_ids": [2]}], [], "missing field 'prompt_ids'"),
    ([{"id": 1, "prompt_ids": [1]}], [], "missing field 'output_ids'"),
    ([{"id": 1, "prompt_ids": [1, -4], "output_ids": [2]}], [], "negative token id"),
    ([{"id": 1, "prompt_ids": [1], "output_ids": "12"}], [], "must be a list of integer"),
    ([{"id": 1, "prompt_ids": [1], "output_ids": []}], [], "the output has no tokens"),
    ([{"id": 1, "prompt": "a b", "output": "b"}], [], "need --tokenizer"),
    ([{"id": 1, "prompt_ids": [1], "output_ids": [2]}, {"id": 1, "prompt_ids": [1], "output_ids": [2]}], [],
     "line 2: duplicate id '1'"),
    ([], [], "no requests"),
    ([{"id": 1, "prompt_ids": [1], "output_ids": [2]}], ["--prompt-lookup-min", "3", "--prompt-lookup-max", "2"],
     "--prompt-lookup-max 2 must be >= --prompt-lookup-min 3"),
    ([{"id": 1, "prompt_ids": [1], "output_ids": [2]}], ["--max-k", "0"], "--max-k must be >= 1"),
    ([{"id": 1, "prompt_ids": [1], "output_ids": [2]}], ["--method", "eagle"], "invalid choice: 'eagle'"),
    ([{"id": 1, "prompt_ids": [1], "output_ids": [2]}], ["--method", "draft"], "--method draft needs --draft"),
    ([{"id": 1, "prompt_ids": [1], "output_ids": [2]}], ["--method", "draft", "--draft", "no-such-model"],
     "no-such-model"),
    ([{"id": 1, "prompt_ids": [1], "output_ids": [2]}], ["--tokenizer", "/no/such/dir"], None),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, rows, extra, needle):
    prompts = tmp_path / "p.jsonl"
    if isinstance(rows, str):
        prompts.write_text(rows)
    elif rows is not None:
        write_prompts(prompts, rows)
    argv = ["--prompts", str(prompts), "--method", "ngram", "--out", str(tmp_path / "o.jsonl"), "--quiet"]
    rc = cli.main(argv + extra)
    err = capsys.readouterr().err
    if needle is None:  # a tokenizer only matters for text prompts: ids need none
        assert rc == 0
        return
    assert rc == 2
    assert err.count("\n") == 1 and "Traceback" not in err and needle in err, err


def test_help_is_true(capsys):
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    for option in ("--prompts", "--method", "--prompt-lookup-min", "--prompt-lookup-max", "--target", "--draft",
                   "--max-k", "--temperature", "--out"):
        assert option in text


def test_bad_out_name_and_foreign_out_file(tmp_path, capsys):
    prompts = write_prompts(tmp_path / "p.jsonl", id_rows(2))
    assert cli.main(["--prompts", str(prompts), "--method", "ngram", "--out", str(tmp_path / "o.csv")]) == 2
    assert "FILE.jsonl, FILE.jsonl.gz or FILE.parquet" in capsys.readouterr().err
    foreign = tmp_path / "o.jsonl"
    foreign.write_text('{"not": "a record"}\n')
    assert cli.main(["--prompts", str(prompts), "--method", "ngram", "--out", str(foreign)]) == 2
    err = capsys.readouterr().err
    assert "missing field 'id'" in err and "use another --out" in err


# ---- draft models (torch) -------------------------------------------------------------------------------

TINY = ["--target", "tiny-llama", "--device", "cpu", "--quiet"]


@pytest.fixture
def torch_models():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")


def closed_form_full_acceptance(n, k):
    return [min(k + 1, n - i) for i in range(n)]


def test_identical_draft_accepts_everything(tmp_path, torch_models):
    rows = id_rows(4, with_output=False)
    prompts = write_prompts(tmp_path / "p.jsonl", rows)
    out = tmp_path / "same.jsonl"
    argv = ["--prompts", str(prompts), "--method", "draft", "--draft", "tiny-llama", "--max-k", "4",
            "--max-new-tokens", "12", "--batch-tokens", "128", "--out", str(out)] + TINY
    assert cli.main(argv) == 0
    got = records(out)
    assert len(got) == 4
    for rec in got.values():
        assert rec.output_tokens == 12
        assert rec.spans.tolist() == closed_form_full_acceptance(12, 4)


def test_given_outputs_need_only_the_draft_and_an_unrelated_draft_stays_near_1(tmp_path, torch_models):
    rows = id_rows(3, with_output=False)
    prompts = write_prompts(tmp_path / "p.jsonl", rows)
    generated = tmp_path / "gen.jsonl"
    assert cli.main(["--prompts", str(prompts), "--method", "draft", "--draft", "tiny-draft", "--max-k", "3",
                     "--max-new-tokens", "16", "--out", str(generated)] + TINY) == 0
    spans = np.concatenate([r.spans for r in records(generated).values()])
    assert spans.mean() < 1.2 and spans.min() == 1
    # the target's own outputs, given back as output_ids, with the target as draft: full acceptance
    from specdec_sim.profiler.acceptance_spans import generate_outputs
    from specdec_sim.profiler.models import build_model
    target = build_model("tiny-llama", "cpu", "fp32")
    outs = generate_outputs(target, [np.array(r["prompt_ids"]) for r in rows], 16, "cpu", None)
    given = write_prompts(tmp_path / "given.jsonl", [dict(r, output_ids=o.tolist()) for r, o in zip(rows, outs)])
    out = tmp_path / "given_out.jsonl"
    assert cli.main(["--prompts", str(given), "--method", "draft", "--draft", "tiny-llama", "--max-k", "3",
                     "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    assert all(r.spans.tolist() == closed_form_full_acceptance(16, 3) for r in records(out).values())


def test_sampled_acceptance_is_seeded_and_full_for_an_identical_draft(tmp_path, torch_models):
    prompts = write_prompts(tmp_path / "p.jsonl", id_rows(2, with_output=False))
    common = ["--prompts", str(prompts), "--method", "draft", "--max-k", "4", "--max-new-tokens", "10",
              "--temperature", "1.0"] + TINY
    assert cli.main(common + ["--draft", "tiny-llama", "--out", str(tmp_path / "same.jsonl")]) == 0
    assert all(r.spans.tolist() == closed_form_full_acceptance(10, 4) for r in records(tmp_path / "same.jsonl").values())
    for name in ("a.jsonl", "b.jsonl"):
        assert cli.main(common + ["--draft", "tiny-draft", "--seed", "3", "--out", str(tmp_path / name)]) == 0
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def test_sequences_longer_than_the_models_take_are_refused(tmp_path, capsys, torch_models):
    prompts = write_prompts(tmp_path / "p.jsonl", [{"id": "x", "prompt_ids": [1] * 4000, "output_ids": [2] * 200}])
    rc = cli.main(["--prompts", str(prompts), "--method", "draft", "--draft", "tiny-draft", "--out",
                   str(tmp_path / "o.jsonl")] + TINY)
    assert rc == 2 and "4200 tokens, more than the models' max_position_embeddings 4096" in capsys.readouterr().err


def test_token_ids_outside_the_model_vocabulary_are_a_tokenizer_mismatch(tmp_path, capsys, torch_models):
    prompts = write_prompts(tmp_path / "p.jsonl", [{"id": "x", "prompt_ids": [1, 2], "output_ids": [3, 5000]}])
    rc = cli.main(["--prompts", str(prompts), "--method", "draft", "--draft", "tiny-draft", "--out",
                   str(tmp_path / "o.jsonl")] + TINY)
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "p.jsonl: line 1: output token id 5000 >= vocab size 1024" in err and "tokenizer mismatch" in err


def test_the_old_command_name_still_works_and_says_so(tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "a", "prompt_ids": [1, 2, 3, 1, 2], "output_ids": [3, 1, 2, 3]}\n')
    out = tmp_path / "spans.jsonl"
    assert cli.main_old_name(["--prompts", str(prompts), "--method", "ngram", "--out", str(out), "--quiet"]) == 0
    assert "profile-acceptance: note: this command is called measure-acceptance now" in capsys.readouterr().err
    assert out.is_file()
