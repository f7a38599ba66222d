"""profile-gpu's bad inputs and file handling, on fake timings (no live clock decides anything): unwritable or
garbled outputs, torn rows, the held-out error warning, atomic renames, SIGTERM."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from specdec_sim.profiler import measure, measure_cli as cli  # noqa: E402
from specdec_sim.costmodel import load_calibration  # noqa: E402
from profiler_helpers import NINE_POINTS, TINY, fake_timing, one_line_error, read_rows  # noqa: E402


def test_out_that_is_a_file_or_unwritable_is_one_line_before_measuring(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(measure, "measure_point", lambda *a, **k: pytest.fail("measured before checking --out"))
    afile = tmp_path / "afile"
    afile.write_bytes(b"\x00\x01")
    assert cli.main(TINY + NINE_POINTS + ["--out", str(afile)]) == 2
    assert f"--out {afile}: is a file, not a directory" in one_line_error(capsys)
    assert cli.main(TINY + NINE_POINTS + ["--out", str(afile / "sub")]) == 2
    assert f"--out {afile / 'sub'}: cannot write there" in one_line_error(capsys)


def test_binary_replay_file_is_one_line_naming_it(tmp_path, capsys):
    blob = tmp_path / "garbage.csv"
    blob.write_bytes(bytes(range(128, 256)) * 8)
    for argv in (TINY, ["--target", "tiny-llama", "--device", "cpu"]):  # with or without --draft
        assert cli.main(argv + ["--replay", str(blob)]) == 2
        assert f"{blob}: not a CSV step log" in one_line_error(capsys)
    blob.write_text("num_decode,num_prefill,prefill_tokens,verify_tokens,kv_tokens,k_max,step_time_s,draft_s,"
                    "verify_s,overhead_s\n2,0,0,8,inf,3,0.01,0.004,0.006,0\n")
    assert cli.main(TINY + ["--replay", str(blob)]) == 2
    assert "row 2, column kv_tokens: not a finite number >= 0" in one_line_error(capsys)


@pytest.mark.parametrize("content, needle", [
    (bytes(range(128, 256)) * 8, "not a measurements CSV (byte 0 is not UTF-8 text)"),
    (b"\x00" * 64 + b"\n", "NUL bytes"),
    (b"hello,world\n1,2\n", "not a measurements CSV (no column 'role' in line 1)"),
])
def test_garbled_measurements_csv_is_one_line_naming_it(tmp_path, monkeypatch, capsys, content, needle):
    monkeypatch.setattr(measure, "time_forward", fake_timing())
    (tmp_path / "measurements.csv").write_bytes(content)
    assert cli.main(TINY + NINE_POINTS + ["--out", str(tmp_path)]) == 2
    err = one_line_error(capsys)
    assert str(tmp_path / "measurements.csv") in err and needle in err


def test_a_bad_row_in_the_middle_is_named_by_line_and_column(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(measure, "time_forward", fake_timing())
    assert cli.main(TINY + NINE_POINTS + ["--out", str(tmp_path)]) == 0
    path = tmp_path / "measurements.csv"
    lines = path.read_text().splitlines(keepends=True)
    lines[3] = lines[3].replace(",ok,", ",maybe,", 1)
    path.write_text("".join(lines))
    capsys.readouterr()
    assert cli.main(TINY + NINE_POINTS + ["--out", str(tmp_path)]) == 2
    assert "measurements.csv: line 4, column status: 'maybe' is not ok or skipped" in one_line_error(capsys)


def test_a_torn_last_row_is_dropped_and_measured_again(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(measure, "time_forward", fake_timing())
    assert cli.main(TINY + NINE_POINTS + ["--out", str(tmp_path)]) == 0
    path = tmp_path / "measurements.csv"
    whole = path.read_bytes()
    last = read_rows(path)[-1]
    path.write_bytes(whole[:-40])  # killed while writing the last row: no line end, a cut-off dtype column
    calls: list = []
    real = measure.measure_point
    monkeypatch.setattr(measure, "measure_point", lambda *a, **k: calls.append(a[2].key) or real(*a, **k))
    capsys.readouterr()
    assert cli.main(TINY + NINE_POINTS + ["--out", str(tmp_path)]) == 0
    assert calls == [(last["role"], int(last["batch"]), int(last["query"]), int(last["context"]))]
    rows = read_rows(path)
    assert len(rows) == 9 and len({(r["role"], r["batch"], r["query"], r["context"]) for r in rows}) == 9
    assert all(r["dtype"] == "fp32" for r in rows) and path.read_bytes().endswith(b"\r\n")
    load_calibration(tmp_path / "calibration.json")


def test_held_out_error_above_10_percent_warns_on_stderr_and_in_the_calibration(tmp_path, monkeypatch, capsys):
    grid = ["--grid", "quick", "--batch-sizes", "1,2,4,8", "--query-tokens", "1,2,4", "--context-lengths", "8,64",
            "--prefill-chunks", "none"]
    monkeypatch.setattr(measure, "time_forward", fake_timing(noise=0.6))
    assert cli.main(TINY + grid + ["--out", str(tmp_path / "noisy")]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("profile-gpu: warning:")]
    cal = load_calibration(tmp_path / "noisy" / "calibration.json")
    assert len(warnings) == 1 and "exceeds 10 %" in warnings[0]
    assert f"{cal.fit_error['mape_pct']:.1f} % mean" in warnings[0] and cal.fit_error["warning"] in warnings[0]
    monkeypatch.setattr(measure, "time_forward", fake_timing(noise=0.0))
    assert cli.main(TINY + grid + ["--out", str(tmp_path / "clean")]) == 0
    assert "warning" not in capsys.readouterr().err
    assert "warning" not in load_calibration(tmp_path / "clean" / "calibration.json").fit_error


def test_outputs_are_renamed_into_place(tmp_path, monkeypatch):
    monkeypatch.setattr(measure, "time_forward", fake_timing())
    assert cli.main(TINY + NINE_POINTS + ["--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calibration.json", "latency_draft.png",
                                                         "latency_target.png", "measured_vs_predicted.png",
                                                         "measurements.csv"]
    cal = json.loads((tmp_path / "calibration.json").read_text())
    assert cal["valid_range"]["max_batch_size"] == 256 and "valid_range" in cal["provenance"]


def test_sigterm_is_handled_like_ctrl_c(tmp_path, monkeypatch, capsys):
    import os
    import signal
    monkeypatch.setattr(measure, "time_forward", fake_timing())
    real = measure.measure_point
    calls: list = []

    def terminate_on_third(*a, **k):
        calls.append(a[2].key)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*a, **k)

    monkeypatch.setattr(measure, "measure_point", terminate_on_third)
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main(TINY + NINE_POINTS + ["--out", str(tmp_path)]) == 143  # 128 + SIGTERM, as simulate and sweep
    assert "rerun the same command to resume" in capsys.readouterr().out
    assert len(read_rows(tmp_path / "measurements.csv")) == 2 and not (tmp_path / "calibration.json").exists()
    assert signal.getsignal(signal.SIGTERM) is before
