"""Prefix caching from trace block hashes (Mooncake `hash_ids`): sharing, hits, LRU eviction, the KV budget."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specdec_sim import SimConfig, run_simulation
from specdec_sim.simulator.kvcache import KVCache, PrefixCache
from specdec_sim.simulator.request import Request
from specdec_sim.simulator.scheduler import Scheduler
from specdec_sim.traces import Trace, load_trace

BS, HASH = 16, 32  # KV block of 16 tokens, hashed blocks of 32 tokens (2 KV blocks each)


def request(i: int, prompt: int, output: int, hashes) -> Request:
    req = Request(i, i, prompt, output, 0.5)
    req.hashes = np.asarray(hashes, dtype=np.int64)
    return req


def scheduler(blocks: int) -> Scheduler:
    return Scheduler(KVCache(blocks, BS, PrefixCache(HASH, BS)), 64, 10_000, True, True, 0)


def no_spec(reqs, kv_tokens, prefill, chunks):
    return [0] * len(reqs)


def step(s: Scheduler):
    plan = s.plan(no_spec)
    s.complete(plan, [0] * len(plan.decoding), 0.0)
    return plan


def test_a_shared_prefix_is_mapped_once_and_only_the_rest_is_prefilled():
    s = scheduler(100)
    a = request(0, 100, 50, [1, 2, 3, 4])
    s.waiting.append(a)
    plan = step(s)
    assert plan.prefills == [(a, 100)]
    assert a.shared_blocks == 3 * 2  # its 3 full hashed blocks are now cached (the 4th is partial)
    used_after_a = s.kv.used
    b = request(1, 100, 50, [1, 2, 9, 10])
    s.waiting.append(b)
    plan = step(s)
    assert [(r.index, c) for r, c in plan.prefills] == [(1, 100 - 64)]  # 2 hashed blocks hit: 64 tokens skipped
    assert s.kv.used - used_after_a == b.blocks - 4  # the 4 shared KV blocks are counted once
    assert (s.kv.prefix.hit_tokens, s.kv.prefix.query_tokens) == (64, 200)
    assert s.prefill_tokens_computed == 136


def test_at_least_the_last_prompt_token_is_recomputed():
    s = scheduler(100)
    a = request(0, 64, 5, [7, 8])
    s.waiting.append(a)
    step(s)
    twin = request(1, 64, 5, [7, 8])
    s.waiting.append(twin)
    plan = step(s)
    assert [(r.index, c) for r, c in plan.prefills] == [(1, 32)]  # 64 = 2 blocks, but only 1 may be reused


def test_idle_cached_blocks_are_evicted_least_recently_used_first():
    s = scheduler(20)
    first, second = request(0, 64, 1, [1, 2]), request(1, 64, 1, [3, 4])
    for r in (first, second):
        s.waiting.append(r)
        step(s)
    assert not s.running and s.kv.prefix.idle_blocks == 8 and s.kv.available == 20
    big = request(2, 16 * 15 - 1, 1, [])  # needs 15 blocks: 12 free + 3 of the idle ones -> both LRU blocks of #0
    s.waiting.append(big)
    step(s)
    assert 1 not in s.kv.prefix.refs and 2 not in s.kv.prefix.refs  # the older request's blocks went first
    assert 3 in s.kv.prefix.refs
    again = request(3, 64, 1, [1, 2])
    s.waiting.append(again)
    assert step(s).prefills[0][1] == 64  # evicted: no hit


def test_a_preempted_request_releases_its_shared_blocks_and_they_stay_cached():
    s = scheduler(100)
    a = request(0, 100, 50, [1, 2, 3, 4])
    s.waiting.append(a)
    step(s)
    s._preempt_last()
    assert a.blocks == 0 and a.shared_blocks == 0 and a.cached_hashes == []
    assert s.kv.prefix.idle_blocks == 6 and s.kv.used == 6
    assert step(s).prefills == [(a, 100 + 1 - 96)]  # readmitted: its cached prompt blocks hit (+1 generated)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.integers(33, 300), st.integers(1, 40), st.integers(0, 5)), min_size=2, max_size=25),
       st.integers(40, 200))
def test_kv_never_exceeds_the_budget_with_sharing_and_eviction(requests, blocks):
    trace = Trace(np.arange(len(requests)), np.arange(len(requests)) * 0.01,
                  np.array([p for p, _, _ in requests]), np.array([o for _, o, _ in requests]), "hypothesis",
                  block_hashes=[[g * 100 + j for j in range(p // HASH)] for p, _, g in requests],
                  hash_block_tokens=HASH)
    config = SimConfig(kv_blocks=blocks, block_size=BS, acceptance="0.6", kv_watermark=0.0)
    res = run_simulation(trace, config, "fixed:2", seed=1)  # KVCache raises KVCacheOverBudget on any overrun
    assert res.summary["peak_kv_utilization"] <= 1.0
    done = res.requests.status == "finished"
    assert (res.requests.emitted_tokens[done] == res.requests.output_tokens[done]).all()
    assert res.summary["prefix_cache_hits_tokens"] <= res.summary["prefix_cache_queries_tokens"]


def test_mooncake_hit_rate_is_reported_and_prefill_tokens_fall():
    trace = load_trace("traces/data/mooncake_conversation_first30min.raw.jsonl", max_requests=300)
    assert trace.hash_block_tokens == 512 and trace.block_hashes is not None
    on = run_simulation(trace, SimConfig(), "none").summary
    off = run_simulation(trace, SimConfig(prefix_caching="off"), "none").summary
    assert on["prefix_cache_hit_rate"] > 0.02 and off["prefix_cache_hit_rate"] is None
    saved = off["prefill_tokens_computed"] - on["prefill_tokens_computed"]
    assert saved > 0 and saved == pytest.approx(on["prefix_cache_hits_tokens"], rel=0.2)
    assert on["mean_ttft_ms"] < off["mean_ttft_ms"]


def test_v0_and_traces_without_hashes_run_as_before():
    trace = load_trace("traces/data/mooncake_conversation_first30min.raw.jsonl", max_requests=50)
    v0 = run_simulation(trace, SimConfig(engine="v0", chunked_prefill=True), "none").summary
    assert v0["prefix_caching"] is False and v0["prefix_cache_hit_rate"] is None
    plain = Trace(trace.request_id, trace.arrival_s, trace.prompt_tokens, trace.output_tokens, "no hashes")
    assert run_simulation(plain, SimConfig(), "none").summary["prefix_cache_hit_rate"] is None


def test_a_block_size_that_does_not_divide_the_hash_block_is_refused():
    with pytest.raises(ValueError, match="--block-size to divide"):
        PrefixCache(512, 48)


def test_bad_hash_ids_name_the_line(tmp_path):
    from specdec_sim.traces import TraceError

    path = tmp_path / "m.jsonl"
    path.write_text('{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [1, 2]}\n'
                    '{"timestamp": 1, "input_length": 600, "output_length": 5, "hash_ids": [1, "x"]}\n')
    with pytest.raises(TraceError, match="line 2.*hash_ids"):
        load_trace(path)
