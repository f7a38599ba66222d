"""Calibrated profiler: time forward passes of a target/draft pair, fit the simulator's cost model.

Entry point: `profile-gpu` (profiler.cli). Modules: models (bundled configs, shapes, construction),
timing (KV-cache prefill and timed forwards), grid (what to measure), measure (run, resume, OOM),
fit (bounded least squares with a knee, pure numpy), calibrate (calibration JSON), plots, replay (step log).
Only models, timing, measure and replay import torch; fit, calibrate, grid and plots do not.
"""
