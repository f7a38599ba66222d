"""Prompts for `measure-acceptance`: a JSONL of token ids or of text, checked with one-line errors.

Each line is one request: `{"id", "prompt_ids": [...], "output_ids": [...]}` (ids) or `{"id", "prompt",
"output"}` (text, tokenized with a local tokenizer: the prompt with the tokenizer's special tokens, the
output without). The output may be left out when the target model generates it (`--method draft`).
Errors name the file and line (1-based) and exit 2 through `PromptsError`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from specdec_sim.profiler.acceptance_spans import TokenRequest
from specdec_sim.acceptance.records import check_record_id, json_lines


class PromptsError(ValueError):
    """A prompts file, line or field that cannot be used (one line)."""


@dataclass(frozen=True)
class PromptLine:
    """A request as read: where it came from, and its ids or text (text is tokenized later)."""

    where: str
    id: str
    prompt_ids: list | None
    output_ids: list | None
    prompt: str | None
    output: str | None

    @property
    def is_text(self) -> bool:
        return self.prompt_ids is None


def _ids(value, field: str, where: str) -> list:
    if not isinstance(value, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        raise PromptsError(f"{where}: field '{field}' must be a list of integer token ids")
    if any(t < 0 for t in value):
        raise PromptsError(f"{where}: field '{field}' has a negative token id {min(value)}")
    return value


def _text(value, field: str, where: str) -> str:
    if not isinstance(value, str):
        raise PromptsError(f"{where}: field '{field}' must be a string, got {type(value).__name__}")
    return value


def parse_line(obj, where: str) -> PromptLine:
    check_record_id(obj, where, PromptsError)
    if "prompt_ids" in obj:
        prompt = _ids(obj["prompt_ids"], "prompt_ids", where)
        output = _ids(obj["output_ids"], "output_ids", where) if obj.get("output_ids") is not None else None
        return PromptLine(where, str(obj["id"]), prompt, output, None, None)
    if "prompt" in obj:
        output = _text(obj["output"], "output", where) if obj.get("output") is not None else None
        return PromptLine(where, str(obj["id"]), None, None, _text(obj["prompt"], "prompt", where), output)
    raise PromptsError(f"{where}: missing field 'prompt_ids' (token ids) or 'prompt' (text)")


def read_prompts(path: Path) -> list[PromptLine]:
    """Every request of a prompts JSONL (or .jsonl.gz); duplicate ids and an empty file are errors."""
    if not path.is_file():
        raise PromptsError(f"--prompts {path}: file not found")
    lines, seen = [], {}
    for number, where, obj in json_lines(path, PromptsError, "--prompts "):
        line = parse_line(obj, where)
        if line.id in seen:
            raise PromptsError(f"{where}: duplicate id {line.id!r} (first on line {seen[line.id]})")
        seen[line.id] = number
        lines.append(line)
    if not lines:
        raise PromptsError(f"--prompts {path}: no requests in the file")
    return lines


def load_tokenizer(directory: Path | None):
    """A local tokenizer (AutoTokenizer, no downloads), or None when no directory is given."""
    if directory is None:
        return None
    if not directory.is_dir():
        raise PromptsError(f"--tokenizer {directory}: not a directory")
    try:
        from transformers import AutoTokenizer
        return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except ImportError:
        raise PromptsError("--tokenizer needs transformers: pip install \".[profile]\"") from None
    except (OSError, ValueError) as exc:
        raise PromptsError(f"--tokenizer {directory}: cannot load a tokenizer: "
                           f"{str(exc).splitlines()[0][:160]}") from None


def to_request(line: PromptLine, tokenizer, need_output: bool) -> TokenRequest:
    """Token ids of one line (text through the tokenizer); an output is required when need_output."""
    if line.is_text:
        if tokenizer is None:
            raise PromptsError(f"{line.where}: text prompts need --tokenizer DIR (or give prompt_ids/output_ids)")
        prompt = tokenizer.encode(line.prompt, add_special_tokens=True)
        output = tokenizer.encode(line.output, add_special_tokens=False) if line.output is not None else None
    else:
        prompt, output = line.prompt_ids, line.output_ids
    if output is None and need_output:
        raise PromptsError(f"{line.where}: missing field '{'output' if line.is_text else 'output_ids'}' "
                           "(--method ngram needs the output; --method draft generates it only with --target)")
    if output is not None and len(output) == 0:
        raise PromptsError(f"{line.where}: the output has no tokens")
    return TokenRequest(line.id, np.asarray(prompt, dtype=np.int64),
                        None if output is None else np.asarray(output, dtype=np.int64))


def check_vocab(req: TokenRequest, where: str, vocab: int, owner: str) -> None:
    """A token id outside the model's vocabulary means the ids come from another tokenizer."""
    for field, ids in (("prompt", req.prompt), ("output", req.output)):
        if ids is not None and len(ids) and int(ids.max()) >= vocab:
            raise PromptsError(f"{where}: {field} token id {int(ids.max())} >= vocab size {vocab} of {owner} "
                               "(tokenizer mismatch?)")
