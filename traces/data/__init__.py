"""Bundled real traces and their sources (SOURCE.md); found by name through traces.bundled_trace."""
