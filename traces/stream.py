"""Open a trace file as a guarded byte stream, and recognise files that are not traces.

:func:`open_trace` opens a file (gzip is unwrapped), reads its first bytes for format
detection and returns a stream that yields them again, then the rest. The stream refuses
binary content (a NUL byte) and lines longer than ``MAX_LINE_BYTES`` as soon as it meets
them, so ``/dev/zero`` or a multi-gigabyte binary file fails in one line instead of being
read into memory. Parquet files are recognised by their magic bytes and read elsewhere.
:func:`not_a_trace` names benchmark result files (vLLM ``bench serve``, GuideLLM).
"""
from __future__ import annotations

import gzip
import io
import os
import zlib
from dataclasses import dataclass

from specdec_sim.traces.model import TraceError

MAX_LINE_BYTES = 1 << 20  # a trace row is a few dozen bytes; a 1 MiB line is not a trace row
HEAD_BYTES = 1 << 16  # bytes sniffed for format detection
_READ_BYTES = 1 << 18  # < MAX_LINE_BYTES, so a line inside one read can never be over the limit
PARQUET_MAGIC = b"PAR1"
GZIP_MAGIC = b"\x1f\x8b"


class GuardedReader(io.RawIOBase):
    """A read-only byte stream that raises TraceError on NUL bytes and over-long lines."""

    def __init__(self, raw: io.BufferedIOBase, name: str) -> None:
        super().__init__()
        self._raw = raw
        self._name = name
        self._pending = b""  # bytes already read (the head), handed out again first
        self._offset = 0  # bytes checked so far
        self._line = 1  # current line number
        self._line_bytes = 0  # bytes since the last newline

    def readable(self) -> bool:
        return True

    def head(self, size: int) -> bytes:
        """The first ``size`` bytes (fewer at end of file), without consuming them.

        They are checked when handed out by ``read``, except that a NUL byte in the first
        line is refused here (format detection reads that line).
        """
        while len(self._pending) < size:
            data = self._raw_read(size - len(self._pending))
            if not data:
                break
            self._pending += data
        first_line = self._pending[:size].split(b"\n", 1)[0]
        if b"\x00" in first_line:
            self._check(first_line)
        return self._pending[:size]

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._pending:
            data, self._pending = self._pending[:len(buffer)], self._pending[len(buffer):]
        else:
            data = self._raw_read(min(len(buffer), _READ_BYTES))
        self._check(data)
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self._raw.close()
        super().close()

    def _raw_read(self, size: int) -> bytes:
        try:
            return self._raw.read(min(size, _READ_BYTES))
        except (OSError, EOFError, zlib.error) as exc:
            raise TraceError(f"{self._name}: cannot read trace file: {exc}") from None

    def _check(self, data: bytes) -> None:
        """Refuse NUL bytes and lines longer than MAX_LINE_BYTES (``data`` < MAX_LINE_BYTES)."""
        nul = data.find(b"\x00")
        if nul >= 0:
            line = self._line + data.count(b"\n", 0, nul)
            raise TraceError(f"{self._name}: line {line}: binary content "
                             f"(NUL byte at byte {self._offset + nul}): not a text trace file")
        first = data.find(b"\n")
        if first < 0:
            self._line_bytes += len(data)
        else:
            self._line_bytes += first
            if self._line_bytes <= MAX_LINE_BYTES:
                self._line += data.count(b"\n")
                self._line_bytes = len(data) - data.rfind(b"\n") - 1
        if self._line_bytes > MAX_LINE_BYTES:
            raise TraceError(f"{self._name}: line {self._line} is longer than {MAX_LINE_BYTES} bytes: "
                             f"not a trace file (binary data?)")
        self._offset += len(data)


@dataclass
class Opened:
    """An opened trace file: its kind, the first bytes and the guarded stream."""

    kind: str  # "text" or "parquet"
    head: bytes  # the first HEAD_BYTES of the (decompressed) content
    stream: GuardedReader | None  # None for Parquet (read from the path by pyarrow)

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()


def open_trace(path: str | os.PathLike, name: str) -> Opened:
    """Open ``path``: Parquet is recognised by magic bytes, gzip is unwrapped, text is guarded."""
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed by Opened.close
        magic = raw.read(4)
    except OSError as exc:
        raise TraceError(f"{name}: cannot read trace file: {exc.strerror or exc}") from None
    except (TypeError, ValueError) as exc:
        raise TraceError(f"{name}: cannot read trace file: {exc}") from None
    if magic == PARQUET_MAGIC:
        raw.close()
        return Opened("parquet", magic, None)
    source: io.BufferedIOBase = _Prefixed(raw, magic)
    if magic[:2] == GZIP_MAGIC:
        source = gzip.GzipFile(fileobj=source, mode="rb")  # type: ignore[assignment]
    stream = GuardedReader(source, name)
    try:
        head = stream.head(HEAD_BYTES)
    except TraceError:
        stream.close()
        raise
    return Opened("text", head, stream)


class _Prefixed(io.RawIOBase):
    """A byte stream that yields ``prefix`` and then the rest of ``raw``."""

    def __init__(self, raw: io.BufferedIOBase, prefix: bytes) -> None:
        super().__init__()
        self._raw, self._prefix = raw, prefix

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._prefix:
            data, self._prefix = self._prefix[:len(buffer)], self._prefix[len(buffer):]
        else:
            data = self._raw.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self._raw.close()
        super().close()


def head_text(head: bytes) -> str:
    """The sniffed bytes as text (UTF-8, BOM dropped, bad bytes replaced)."""
    return head.decode("utf-8-sig", errors="replace")


_VLLM_KEYS = ('"request_throughput"', '"num_prompts"', '"model_id"', '"total_input_tokens"', '"mean_ttft_ms"')
_GUIDELLM_MARKS = ("generative_benchmark", "guidellm", '"request_loader"', '"worker"')


def not_a_trace(text: str, name: str) -> TraceError | None:
    """An error for a benchmark result file (vLLM ``bench serve`` JSON, GuideLLM report), else None."""
    start = text.lstrip()[:1]
    if start == "{" and sum(key in text for key in _VLLM_KEYS) >= 2:
        return TraceError(f"{name} is a vllm bench serve result, not a trace: give the trace file it was run on "
                          f"(or a bundled trace name), or a lengths trace with --rate for Poisson arrivals")
    benchmarks = '"benchmarks"' in text if start == "{" else text.lstrip().startswith("benchmarks:")
    if benchmarks and any(mark in text for mark in _GUIDELLM_MARKS):
        return TraceError(f"{name} is a GuideLLM benchmark report, not a trace: give the trace or dataset file "
                          f"it was run on (normalized CSV, Azure CSV, Mooncake JSONL, lengths CSV or Parquet)")
    return None
