"""Bundled model architecture configs (HF config.json fields) that the profiler builds models from."""
