"""`measure-acceptance`: measure per-position acceptance of your proposer on your prompts, as an acceptance trace.

    measure-acceptance --prompts prompts.jsonl --method ngram --prompt-lookup-max 4 --out ngram.jsonl
    measure-acceptance --prompts prompts.jsonl --method draft --target tiny-llama --draft tiny-draft \\
                       --device cpu --out draft.jsonl.gz

The output is an acceptance trace (acceptance/records.py; docs/acceptance-traces.md) that `simulate
--acceptance-trace` replays. Records are appended one per request as they finish (a .jsonl.gz or .parquet
output is assembled from a `<out>.partial.jsonl` at the end); rerun the same command to resume: ids
already written are skipped and a line torn by a kill is redone. Bad input prints one line and exits 2;
Ctrl-C / SIGTERM keep what was written and exit 130 / 143. See docs/measure-acceptance.md. The command
was called `profile-acceptance` before; that name still works and says so.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import specdec_sim
from specdec_sim.cli_support import OneLineParser, fail
from specdec_sim.profiler.models import add_device_options
from specdec_sim.profiler.acceptance_spans import DraftProfiler, TokenRequest, batches
from specdec_sim.profiler.acceptance_inputs import (PromptLine, PromptsError, check_vocab, load_tokenizer,
                                                    read_prompts, to_request)
from specdec_sim.profiler.measure_cli import UsageError, resolve_device
from specdec_sim.costmodel.architectures import ARCHITECTURES, DTYPE_BYTES, ArchitectureError, architecture, model_config
from specdec_sim.acceptance.ngram_spans import NgramSettings, ngram_spans
from specdec_sim.safe_output import interrupt_exit_code, sigterm_as_interrupt
from specdec_sim.acceptance.records import (AcceptanceRecord, AcceptanceTraceError, AcceptanceTraceWriter,
                                            load_acceptance_trace, write_acceptance_trace)
from specdec_sim.acceptance.spans import replay_steps

PROG = "measure-acceptance"
OLD_NAME = "profile-acceptance"  # what the command was called before 2026-12
SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0],
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--version", action="version", version=f"{PROG} {specdec_sim.__version__}")
    p.add_argument("--prompts", type=Path, required=True,
                   help='JSONL (or .jsonl.gz), one request a line: {"id", "prompt_ids", "output_ids"} or '
                        '{"id", "prompt", "output"} (text, needs --tokenizer)')
    p.add_argument("--method", required=True, choices=["ngram", "draft"],
                   help="ngram = vLLM prompt lookup (no model); draft = a draft model against the target")
    p.add_argument("--out", type=Path, required=True, help="acceptance trace to write: .jsonl, .jsonl.gz or .parquet")
    p.add_argument("--max-k", type=int, default=8,
                   help="longest proposal considered (num_speculative_tokens): spans are capped at max-k + 1")
    p.add_argument("--tokenizer", type=Path, default=None, help="local tokenizer directory for text prompts")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("ngram (vLLM's prompt_lookup_min / prompt_lookup_max)")
    g.add_argument("--prompt-lookup-min", type=int, default=1, help="shortest n-gram matched")
    g.add_argument("--prompt-lookup-max", type=int, default=4, help="longest n-gram matched (tried first)")
    d = p.add_argument_group("draft")
    d.add_argument("--target", default=None,
                   help=f"target model: a registry name ({', '.join(ARCHITECTURES)}) or a directory with "
                        "config.json; generates missing outputs and is needed for --temperature > 0")
    d.add_argument("--draft", default=None, help="draft model (same choices)")
    d.add_argument("--load-weights", action="store_true",
                   help="load real weights when a model directory has them (default: random weights)")
    add_device_options(d, DTYPE_BYTES)
    d.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    d.add_argument("--temperature", type=float, default=0.0,
                   help="0 = greedy verification; > 0 = rejection sampling, alpha = sum min(p, q) per position")
    d.add_argument("--seed", type=int, default=0, help="seed of the model weights and of sampled acceptance")
    d.add_argument("--max-new-tokens", type=int, default=256, help="output length the target generates when a "
                                                                   "request has no output")
    d.add_argument("--batch-tokens", type=int, default=16384,
                   help="padded tokens per forward (requests x longest sequence); lower it if memory runs out")
    return p


def _check_options(args) -> None:
    for option, value, low in (("--max-k", args.max_k, 1), ("--prompt-lookup-min", args.prompt_lookup_min, 1),
                               ("--prompt-lookup-max", args.prompt_lookup_max, 1), ("--seed", args.seed, 0),
                               ("--max-new-tokens", args.max_new_tokens, 1), ("--batch-tokens", args.batch_tokens, 1),
                               ("--threads", args.threads, 1)):
        if value is not None and value < low:
            raise UsageError(f"{option} must be >= {low}, not {value}")
    if args.prompt_lookup_max < args.prompt_lookup_min:
        raise UsageError(f"--prompt-lookup-max {args.prompt_lookup_max} must be >= --prompt-lookup-min "
                         f"{args.prompt_lookup_min}")
    if not (args.temperature >= 0 and np.isfinite(args.temperature)):
        raise UsageError(f"--temperature must be a finite number >= 0, not {args.temperature}")
    if not any(args.out.name.endswith(s) for s in SUFFIXES) or args.out.name in SUFFIXES:
        raise UsageError(f"--out {args.out}: name it FILE.jsonl, FILE.jsonl.gz or FILE.parquet")
    if args.out.is_dir():
        raise UsageError(f"--out {args.out}: is a directory")
    if args.method == "draft":
        if not args.draft:
            raise UsageError("--method draft needs --draft (and --target to generate outputs or for --temperature)")
        if args.temperature > 0 and not args.target:
            raise UsageError("--temperature > 0 needs --target (its probabilities decide acceptance)")
        for name in filter(None, (args.target, args.draft)):
            architecture(name)


class Output:
    """Where records go: appended to --out (.jsonl), or to <out>.partial.jsonl and assembled at the end."""

    def __init__(self, out: Path):
        self.out = out
        self.direct = out.name.endswith(".jsonl")
        self.append_path = out if self.direct else out.with_name(out.name + ".partial.jsonl")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            self.finished = [] if self.direct or not out.is_file() else load_acceptance_trace(out)
            self.writer = AcceptanceTraceWriter(self.append_path)
        except OSError as exc:
            raise UsageError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
        except AcceptanceTraceError as exc:
            raise UsageError(f"{exc} (delete it or use another --out)") from None
        self.done = {r.id: r for r in self.finished}
        if self.writer.done_ids:
            self.done.update((r.id, r) for r in load_acceptance_trace(self.append_path))

    def append(self, record: AcceptanceRecord) -> None:
        self.writer.append(record)
        self.done[record.id] = record

    def finish(self) -> list[AcceptanceRecord]:
        self.writer.close()
        records = list(self.done.values())
        if not self.direct:
            write_acceptance_trace(self.out, records)
            self.append_path.unlink(missing_ok=True)
        return records


def _check_resumed(req: TokenRequest, done: AcceptanceRecord, where: str, out: Path) -> None:
    """A record already in --out must be of the same request (same prompt and output lengths)."""
    if done.prompt_tokens != len(req.prompt) or (req.output is not None and done.output_tokens != len(req.output)):
        raise UsageError(f"{where}: id {req.id!r} is already in {out} with {done.prompt_tokens} prompt / "
                         f"{done.output_tokens} output tokens, not {len(req.prompt)} / "
                         f"{'?' if req.output is None else len(req.output)}: use another --out")


def _max_positions(args) -> int | None:
    """The longest sequence the models take (max_position_embeddings), None for ngram."""
    if args.method != "draft":
        return None
    sizes = [architecture(name).max_position for name in (args.target, args.draft) if name]
    sizes = [int(s) for s in sizes if s]
    return min(sizes) if sizes else None


def _requests(args, lines: list[PromptLine], tokenizer, vocab: int | None, owner: str) -> list[TokenRequest]:
    need_output = args.method == "ngram" or not args.target
    longest = _max_positions(args)
    reqs = []
    for line in lines:
        req = to_request(line, tokenizer, need_output)
        if vocab is not None:
            check_vocab(req, line.where, vocab, owner)
        if req.output is None and len(req.prompt) == 0:
            raise UsageError(f"{line.where}: an empty prompt needs its output given (the target cannot start "
                             "from nothing)")
        length = len(req.prompt) + (len(req.output) if req.output is not None else args.max_new_tokens)
        if longest is not None and length > longest:
            raise UsageError(f"{line.where}: prompt + output is {length} tokens, more than the models' "
                             f"max_position_embeddings {longest}")
        reqs.append(req)
    return reqs


def _record(req: TokenRequest, spans: np.ndarray) -> AcceptanceRecord:
    return AcceptanceRecord(req.id, len(req.prompt), len(req.output), spans)


def _vocab(args, tokenizer) -> tuple[int | None, str]:
    """The vocabulary every id must fall in, and whose it is (None: no check for ngram without a tokenizer)."""
    sizes = {}
    if args.method == "draft":
        sizes = {f"{role} {name}": architecture(name).vocab
                 for role, name in (("target", args.target), ("draft", args.draft)) if name}
        if tokenizer is not None:
            for owner, size in sizes.items():
                if len(tokenizer) > size:
                    raise UsageError(f"--tokenizer {args.tokenizer}: {len(tokenizer)} tokens, more than the vocab "
                                     f"size {size} of {owner} (tokenizer mismatch)")
    elif tokenizer is not None:
        sizes = {f"tokenizer {args.tokenizer}": len(tokenizer)}
    if not sizes:
        return None, ""
    owner = min(sizes, key=sizes.get)
    return sizes[owner], owner


def _progress(quiet: bool, total: int):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    bar = Progress(*columns, console=Console(stderr=True), transient=True, disable=quiet)
    return bar, bar.add_task("requests", total=total)


def _run_ngram(args, pending: list[TokenRequest], output: Output) -> None:
    settings = NgramSettings(args.prompt_lookup_min, args.prompt_lookup_max, args.max_k)
    bar, task = _progress(args.quiet, len(pending))
    with bar:
        for req in pending:
            output.append(_record(req, ngram_spans(req.prompt, req.output, settings)))
            bar.advance(task)


def _draft_profiler(args) -> DraftProfiler:
    import torch
    from specdec_sim.profiler.models import build_model

    device = resolve_device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    dtype = args.dtype if args.dtype != "auto" else ("bf16" if device.startswith("cuda") else "fp32")
    target = build_model(args.target, device, dtype, args.load_weights, args.seed) if args.target else None
    draft = build_model(args.draft, device, dtype, args.load_weights, args.seed)
    eos = model_config(args.target).get("eos_token_id") if args.target else None
    eos = eos[0] if isinstance(eos, list) and eos else eos
    return DraftProfiler(target, draft, device, args.max_k, args.temperature, args.seed, args.max_new_tokens,
                         eos if isinstance(eos, int) else None)


def _run_draft(args, pending: list[TokenRequest], output: Output) -> None:
    profiler = _draft_profiler(args)
    bar, task = _progress(args.quiet, len(pending))
    try:
        with bar:
            for group in batches(pending, args.batch_tokens, args.max_new_tokens):
                for req, spans in profiler.spans(group):
                    output.append(_record(req, spans))
                bar.advance(task, len(group))
    except RuntimeError as exc:
        from specdec_sim.profiler.measure_timing import is_oom
        if not is_oom(exc):
            raise
        raise UsageError(f"out of memory on {profiler.device} (finished requests are in {output.append_path}): "
                         "lower --batch-tokens and rerun") from None


def _summary(records: list[AcceptanceRecord], k: int) -> str:
    steps = [replay_steps(r.spans, k) for r in records]
    emitted, count = sum(sum(s) for s in steps), sum(len(s) for s in steps)
    mean = f"{emitted / count:.3f}" if count else "n/a"
    return f"mean acceptance length at k={k}: {mean} tokens per decode step over {len(records)} requests"


def run(args) -> int:
    lines = read_prompts(args.prompts)
    tokenizer = load_tokenizer(args.tokenizer) if any(line.is_text for line in lines) else None
    vocab, owner = _vocab(args, tokenizer)
    reqs = _requests(args, lines, tokenizer, vocab, owner)
    output = Output(args.out)
    for line, req in zip(lines, reqs):
        if req.id in output.done:
            _check_resumed(req, output.done[req.id], line.where, args.out)
    pending = [r for r in reqs if r.id not in output.done]
    if not args.quiet:
        print(f"{PROG}: {args.method} | {len(reqs)} requests, {len(reqs) - len(pending)} already in "
              f"{args.out} | max-k {args.max_k}")
    try:
        if pending:
            (_run_ngram if args.method == "ngram" else _run_draft)(args, pending, output)
    except KeyboardInterrupt:
        output.writer.close()
        print(f"{PROG}: interrupted: {len(output.done)} requests are in {output.append_path}; "
              "rerun the same command to resume", file=sys.stderr)
        raise
    records = output.finish()
    print(f"wrote {args.out} ({len(pending)} new requests); {_summary(records, args.max_k)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a bad option (already printed as one line)
        return int(exc.code or 0)
    try:
        _check_options(args)
        if args.method == "draft":
            try:
                import torch  # noqa: F401
                import transformers  # noqa: F401
            except ImportError:
                raise UsageError("--method draft needs torch and transformers: pip install \".[profile]\"") from None
        with sigterm_as_interrupt():
            return run(args)
    except (UsageError, ArchitectureError, PromptsError, AcceptanceTraceError) as exc:
        return fail(PROG, exc)
    except KeyboardInterrupt as exc:
        return interrupt_exit_code(exc)


def main_old_name(argv: list[str] | None = None) -> int:
    """`profile-acceptance`: the same command under its old name, with a one-line note."""
    print(f"{OLD_NAME}: note: this command is called {PROG} now (both names work)", file=sys.stderr)
    return main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
