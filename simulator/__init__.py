"""The serving simulator: a SimPy engine of replicas with continuous batching and speculative decoding.

Start at `engine.run_simulation`; `docs/design.md` lists the files in the order one request meets
them. `simulate` is `cli.py`; sweeps, capacity search and plots live in `sweep/`, above the engine.
"""
