"""specdec-sim: a calibrated GPU profiler and a SimPy cluster simulator for speculative decoding."""
__version__ = "0.1.0"
