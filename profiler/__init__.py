"""Calibrated profiler: measure forward passes, build calibrations from rooflines, measure acceptance spans.

Modules are named by the pipeline they serve:

* `measure_*` (`profile-gpu`, measure_cli): `measure_grid` (what to measure), `measure_timing` (KV-cache
  prefill and timed forwards), `measure` (run, resume, OOM), `measure_fit` (bounded least squares with a
  knee, pure numpy), `measure_calibration` (the calibration JSON), `measure_plots`, `measure_replay` (a
  simulator step log executed on the models);
* `roofline_*` (`build-calibration`, roofline_cli): `roofline_build` (a calibration from the roofline of
  costmodel.hardware), `roofline_efficiency` and `vidur` (GPU efficiencies from Vidur's kernel tables),
  `roofline_serving`, `published` and `roofline_profile_points` (serving terms fitted to published points
  or a profile-gpu CSV);
* `bench_*` (`build-calibration --from-bench`): `bench_results` (vllm bench serve result JSONs read and
  checked), `bench_fit` (each run simulated with a candidate calibration; the serving terms fitted to them,
  leave-one-out refits), `bench_build` (the calibration, its provenance and per-file errors, the report);
* `acceptance_*` (`measure-acceptance`, acceptance_cli): `acceptance_spans` (draft-model spans with torch),
  `acceptance_inputs` (the prompts file); n-gram spans are numpy (acceptance/ngram_spans.py).

`models` builds torch models of the one model registry (costmodel/architectures.py). Only models,
measure_timing, measure, measure_replay and acceptance_spans import torch (lazily where they can).
"""
