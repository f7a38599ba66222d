"""Bundled data of the calibration builder: published measurements and Vidur-derived GPU efficiencies (SOURCE.md)."""
