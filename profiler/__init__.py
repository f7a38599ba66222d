"""Calibrated profiler: time forward passes of a target/draft pair, fit the simulator's cost model.

Entry points: `profile-gpu` (profiler.cli), `build-calibration` (profiler.build_cli), `profile-acceptance`
(profiler.acceptance_cli). Modules: models (bundled configs, shapes, construction), timing (KV-cache prefill
and timed forwards), grid (what to measure), measure (run, resume, OOM), fit (bounded least squares with a
knee, pure numpy), calibrate (calibration JSON), plots, replay (step log); build (a calibration from the
roofline of costmodel.hardware with efficiencies fitted to measured sets), efficiency and vidur (GPU
efficiencies from Vidur's kernel tables), serving, published and profile_points (serving terms fitted to
published points or a profile-gpu CSV); ngram_spans (vLLM prompt-lookup spans, numpy), acceptance and
acceptance_inputs (draft-model acceptance spans). Only models, timing, measure, replay and acceptance import
torch (acceptance lazily); the others do not.
"""
