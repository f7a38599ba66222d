"""Executing sweep tasks: local processes (spawned), in-process, or a Dask cluster, with a journal that resumes.

`execute_tasks` runs the tasks whose `run_id` has not finished in `out_dir` and records each row as it
completes (simulator/sweep/store.py: `runs.jsonl`, then the result tables); a worker that dies becomes
an error row (`crash_row`), retried on the next run. Interrupts stop the workers at once.
"""
from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from typing import Any, Callable, Iterator, Protocol, Sequence

import pandas as pd

from specdec_sim.simulator.sweep.lifecycle import terminate_workers, worker_init
from specdec_sim.simulator.sweep.store import STATUS_ERROR, STATUS_OK, ResultStore


class Task(Protocol):
    """Anything `run_tasks` can execute: a stable `run_id` and flat config `columns()`."""

    run_id: str

    def columns(self) -> dict[str, Any]: ...


def one_line(exc: BaseException) -> str:
    """`Type: message` on one line, with the innermost frame for unexpected exceptions."""
    import traceback
    from pathlib import Path

    msg = " ".join(str(exc).split()) or "(no message)"
    text = f"{type(exc).__name__}: {msg}"
    frames = traceback.extract_tb(exc.__traceback__)
    if frames and not isinstance(exc, (ValueError, KeyError, FileNotFoundError)):
        last = frames[-1]
        text += f" [{Path(last.filename).name}:{last.lineno}]"
    return text[:500]


def crash_row(task: Task, exc: BaseException) -> dict[str, Any]:
    """The row of a task whose worker died (BrokenProcessPool, KilledWorker): retried on resume."""
    return {"run_id": task.run_id, **task.columns(), "status": STATUS_ERROR,
            "error": f"worker failed: {one_line(exc)}", "wall_s": float("nan")}


def _iter_local(fn: Callable, tasks: Sequence[Task], workers: int) -> Iterator[dict[str, Any]]:
    if workers == 0:
        yield from (fn(t) for t in tasks)
        return
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                               initializer=worker_init, initargs=(os.getpid(),))
    try:
        owner: dict[Future, Task] = {pool.submit(fn, t): t for t in tasks}
        pending = set(owner)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                exc = fut.exception()
                yield crash_row(owner[fut], exc) if exc else fut.result()
    except BaseException:  # interrupted (Ctrl-C, SIGTERM, generator closed): do not wait for running tasks
        terminate_workers(pool)  # first: shutdown() forgets the processes
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _iter_dask(fn: Callable, tasks: Sequence[Task], client_or_address: Any) -> Iterator[dict[str, Any]]:
    from distributed import Client, as_completed

    own = not isinstance(client_or_address, Client)
    client = Client(client_or_address) if own else client_or_address
    try:
        owner = {client.submit(fn, t, key=f"{getattr(fn, '__name__', 'task')}-{t.run_id}", pure=False): t
                 for t in tasks}
        for fut in as_completed(list(owner)):
            yield crash_row(owner[fut], fut.exception()) if fut.status == "error" else fut.result()
    finally:
        if own:
            client.close()


def iter_results(fn: Callable[[Any], dict[str, Any]], tasks: Sequence[Task], workers: int = 2,
                 dask: Any = None) -> Iterator[dict[str, Any]]:
    """Rows in completion order, from local processes (`workers`; 0 = in-process) or Dask."""
    if dask is not None:
        return _iter_dask(fn, tasks, dask)
    return _iter_local(fn, tasks, workers)


def execute_tasks(tasks: Sequence[Task], out_dir: str | os.PathLike, fn: Callable,
                  workers: int = 2, dask: Any = None, progress: bool = True, name: str = "results",
                  on_row: Callable[[dict[str, Any]], None] | None = None,
                  announce: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Execute the tasks not yet finished in `out_dir`, recording each as it completes.

    Returns the full table (earlier runs included). Tasks are run by `fn`, a picklable
    top-level function returning a row dict with `run_id` and `status`. `announce(resumed, total)`
    is called once before anything runs.
    """
    store = ResultStore.open(out_dir, name)
    done = store.finished()
    todo = [t for t in tasks if t.run_id not in done]
    skipped, failed = len(tasks) - len(todo), 0
    if announce:
        announce(skipped, len(tasks))
    try:
        with _progress_bar(progress) as bar:
            bar_task = bar.add_task(f"({skipped} resumed)", total=len(tasks), completed=skipped)
            rows = iter_results(fn, todo, workers, dask) if todo else iter(())
            try:
                for row in rows:
                    store.add(row)
                    failed += row.get("status") != STATUS_OK
                    bar.update(bar_task, advance=1, description=f"({skipped} resumed, {failed} failed)")
                    if on_row:
                        on_row(row)
            finally:  # an interrupt outside the generator still stops the workers now
                close = getattr(rows, "close", None)
                if close:
                    close()
    finally:
        store.write_final_table()
    return store.frame()


def _progress_bar(enabled: bool):
    """A rich progress bar over runs (disabled: a no-op with the same interface)."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    return Progress(TextColumn("[bold]sweep[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), disable=not enabled)
