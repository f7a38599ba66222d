"""Shipped calibrations: one JSON file per target/draft pair and GPU (see costmodel/calibration.py)."""
