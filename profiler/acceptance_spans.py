"""Draft-model acceptance: per-position spans of a draft against a target's output (HF transformers).

Greedy verification accepts a draft token when it equals the target's token, and a greedy draft that
proposes from output token i keeps proposing exactly what it predicts on the target's own output for as
long as it agrees with it. So one teacher-forced forward of the draft over prompt + output gives every
span at once: `hit[j]` = (the draft's argmax after output token j == output token j + 1), and
`spans[i] = 1 + (length of the run of hits starting at i)`, capped at k_max + 1 and at the tokens left
(`spans[i] <= len(output) - i`, the last span is 1). Spans therefore fall by one along an accepted run,
exactly as SpecDecode-Bench's files do for a consistent proposer.

With temperature > 0 the standard rejection rule (accept a draft x ~ q with probability min(1, p(x)/q(x)))
accepts a position with probability alpha_j = sum_x min(p_j(x), q_j(x)), p and q the target's and the
draft's distributions at temperature T after output token j (teacher-forced on the given output). A hit is
then a seeded draw u_j < alpha_j (u from the request id and --seed), and spans follow as above. This is
the usual approximation that the verified continuation follows the recorded output.

The target runs only to produce missing outputs (greedy, batched, left-padded `generate`) and for
sampled acceptance; given greedy outputs need the draft alone. torch/transformers are imported lazily.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TokenRequest:
    """One request as token ids: the prompt and the target's output (None until generated)."""

    id: str
    prompt: np.ndarray
    output: np.ndarray | None


def spans_from_hits(hit: np.ndarray, k_max: int) -> np.ndarray:
    """spans (len(hit) + 1 of them) from per-position hits: 1 + the run of hits from i, capped at k_max."""
    hit = np.asarray(hit, dtype=bool).reshape(-1)
    n = len(hit) + 1
    idx = np.arange(n - 1)
    miss = np.where(hit, n - 1, idx)                        # index of position i if it misses
    next_miss = np.minimum.accumulate(miss[::-1])[::-1]     # first miss at or after i (n - 1: none)
    runs = np.append(next_miss - idx, 0)
    return 1 + np.minimum(runs, k_max)


def request_seed(seed: int, request_id: str) -> np.random.Generator:
    """A generator that depends only on --seed and the request id (so a resumed run draws the same)."""
    return np.random.default_rng([int(seed), zlib.crc32(request_id.encode("utf-8"))])


def _batches(seqs: list[TokenRequest], batch_tokens: int) -> list[list[int]]:
    """Indices of consecutive requests whose padded length times count stays within batch_tokens."""
    groups, current, longest = [], [], 0
    for i, s in enumerate(seqs):
        length = len(s.prompt) + (len(s.output) if s.output is not None else 0)
        new_longest = max(longest, length)
        if current and new_longest * (len(current) + 1) > batch_tokens:
            groups.append(current)
            current, new_longest = [], length
        current.append(i)
        longest = new_longest
    if current:
        groups.append(current)
    return groups


def _right_padded(rows: list[np.ndarray], device):
    import torch
    width = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, :len(r)] = torch.as_tensor(r, dtype=torch.long)
    return ids.to(device)


def _hidden(model, ids):
    """Last hidden states of a causal LM (right padding needs no mask: positions never see later pads)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    return decoder(input_ids=ids, use_cache=False).last_hidden_state


def _logits_at(model, hidden, b: int, positions: slice):
    return model.get_output_embeddings()(hidden[b, positions]).float()


def greedy_hits(draft, seqs: list[TokenRequest], device, chunk_tokens: int = 2048) -> list[np.ndarray]:
    """Per request: hit[j] = draft argmax after output token j equals output token j + 1 (one forward)."""
    import torch
    ids = _right_padded([np.concatenate([s.prompt, s.output]) for s in seqs], device)
    out = []
    with torch.inference_mode():
        hidden = _hidden(draft, ids)
        for b, s in enumerate(seqs):
            p, n = len(s.prompt), len(s.output)
            guesses = []
            for lo in range(p, p + n - 1, chunk_tokens):
                hi = min(lo + chunk_tokens, p + n - 1)
                guesses.append(_logits_at(draft, hidden, b, slice(lo, hi)).argmax(-1).cpu().numpy())
            guess = np.concatenate(guesses) if guesses else np.zeros(0, dtype=np.int64)
            out.append(guess == s.output[1:])
    return out


def sampled_hits(target, draft, seqs: list[TokenRequest], device, temperature: float, seed: int,
                 chunk_tokens: int = 1024) -> list[np.ndarray]:
    """Per request: seeded draws u_j < sum_x min(p_j, q_j) at temperature T (the rejection rule's chance)."""
    import torch
    ids = _right_padded([np.concatenate([s.prompt, s.output]) for s in seqs], device)
    out = []
    with torch.inference_mode():
        h_target, h_draft = _hidden(target, ids), _hidden(draft, ids)
        for b, s in enumerate(seqs):
            p, n = len(s.prompt), len(s.output)
            alphas = []
            for lo in range(p, p + n - 1, chunk_tokens):
                hi = min(lo + chunk_tokens, p + n - 1)
                lt = _logits_at(target, h_target, b, slice(lo, hi))
                ld = _logits_at(draft, h_draft, b, slice(lo, hi))
                vocab = min(lt.shape[-1], ld.shape[-1])  # padded vocabularies of one tokenizer may differ
                pt = torch.softmax(lt[:, :vocab] / temperature, -1)
                qd = torch.softmax(ld[:, :vocab] / temperature, -1)
                alphas.append(torch.minimum(pt, qd).sum(-1).clamp(0, 1).cpu().numpy())
            alpha = np.concatenate(alphas) if alphas else np.zeros(0)
            u = request_seed(seed, s.id).random(len(alpha))
            out.append(u < alpha)
    return out


def generate_outputs(target, prompts: list[np.ndarray], max_new_tokens: int, device,
                     eos_token_id: int | None) -> list[np.ndarray]:
    """The target's greedy outputs (batched, left-padded), each cut after its first EOS."""
    import torch
    width = max(len(p) for p in prompts)
    ids = torch.zeros((len(prompts), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, p in enumerate(prompts):
        ids[b, width - len(p):] = torch.as_tensor(p, dtype=torch.long)
        mask[b, width - len(p):] = 1
    with torch.inference_mode():
        seq = target.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                              max_new_tokens=max_new_tokens, min_new_tokens=1, pad_token_id=0,
                              eos_token_id=eos_token_id, temperature=None, top_p=None, top_k=None)
    outs = []
    for row in seq[:, width:].cpu().numpy():
        if eos_token_id is not None and (row == eos_token_id).any():
            row = row[:int(np.argmax(row == eos_token_id)) + 1]
        outs.append(row.astype(np.int64))
    return outs


@dataclass
class DraftProfiler:
    """A target/draft pair on one device, turning batches of requests into span arrays."""

    target: object | None
    draft: object
    device: str
    k_max: int
    temperature: float = 0.0
    seed: int = 0
    max_new_tokens: int = 128
    eos_token_id: int | None = None

    def complete(self, seqs: list[TokenRequest]) -> list[TokenRequest]:
        """Fill in missing outputs with the target's greedy generation."""
        missing = [i for i, s in enumerate(seqs) if s.output is None]
        if not missing:
            return seqs
        outs = generate_outputs(self.target, [seqs[i].prompt for i in missing], self.max_new_tokens,
                                self.device, self.eos_token_id)
        seqs = list(seqs)
        for i, o in zip(missing, outs):
            seqs[i] = TokenRequest(seqs[i].id, seqs[i].prompt, o)
        return seqs

    def spans(self, seqs: list[TokenRequest]) -> list[tuple[TokenRequest, np.ndarray]]:
        seqs = self.complete(seqs)
        if self.temperature > 0:
            hits = sampled_hits(self.target, self.draft, seqs, self.device, self.temperature, self.seed)
        else:
            hits = greedy_hits(self.draft, seqs, self.device)
        return [(s, spans_from_hits(h, self.k_max)) for s, h in zip(seqs, hits)]


def batches(seqs: list[TokenRequest], batch_tokens: int, max_new_tokens: int) -> list[list[TokenRequest]]:
    """Requests grouped for one forward each (a missing output counts as max_new_tokens)."""
    sized = [s if s.output is not None else TokenRequest(s.id, s.prompt, np.zeros(max_new_tokens, np.int64))
             for s in seqs]
    return [[seqs[i] for i in group] for group in _batches(sized, batch_tokens)]
