"""Sweeps above the engine: grids of runs on local processes or Dask (`runner`), the resumable result
table (`store`), capacity search (`capacity`), figures (`plots`) and the `sweep` command (`cli`)."""
