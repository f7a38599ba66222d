"""vLLM V0 (2024, the SmartSpec paper's engine) from its mechanics: a V1 roofline calibration turned into a V0 one.

V0's SpecDecodeWorker (vLLM 0.5-0.6.3) differs from V1 in how it runs a speculative step, not in the GPU:

* scoring by **batch expansion** (the default scorer with CUDA graphs through v0.6.3): each request's k+1
  positions are scored as separate one-token sequences, each attending its full context, so the KV read and
  the per-sequence costs scale with B x (k+1) (`scorer` "batch_expansion"; the MQA scorer, v0.6.3's
  alternative, is `scorer` "mqa");
* CUDA graphs as V0 captured them: decode batches of up to 256 sequences only (`_BATCH_SIZES_TO_CAPTURE` in
  V0's vllm/worker/model_runner.py: 1, 2, 4, then multiples of 8 to 256); a larger batch, a batch-expanded
  scoring batch of B x (k+1) sequences included, and every prefill ran eagerly and paid kernel-launch costs on
  every layer (`eager_forward_ms` = layers x the eager cost per layer);
* the proposer and the scorer as separate passes: a draft model proposes one token per request per pass
  (`first_pass` "drafting"), prompt lookup on the host (SpecDecode-Bench's share of the verify time);
* the verification stage on the host per request (`spec_per_request_ms`) and no dynamic-k tax (V0 chose k
  per step with the same decode graphs).

Two figures come from vLLM PR #9298's SpecDecodeWorker stage times (v0.6.3.post2, Meta-Llama-3-8B with the
24-layer Qwama-0.5B draft, batch 16, k = 3, on an A10): the eager cost per layer is the proposal time with
--enforce-eager minus the one with CUDA graphs, per draft layer; the verification time per request is its
verification time over the batch. Both are host-side costs measured on that A10 machine, used as they are
for H100 hosts (said in every V0 calibration's provenance). Nothing is fitted to a V0 serving result.
"""
from __future__ import annotations

from dataclasses import replace

from specdec_sim.costmodel import Calibration
from specdec_sim.costmodel.architectures import Architecture
from specdec_sim.profiler.published import Measure, parameter

V0_CUDA_GRAPH_MAX_BATCH = 256  # V0 _BATCH_SIZES_TO_CAPTURE: [1, 2, 4] + [8 * i for i in range(1, 33)]
PR9298_DRAFT_LAYERS = 24  # turboderp/Qwama-0.5B-Instruct: Qwen2-0.5B's 24 layers with the Llama-3 vocabulary
PR9298_BATCH = 16
PR9298 = {"graph": "v0_pr9298_proposal_ms_per_token_graph", "eager": "v0_pr9298_proposal_ms_per_token_eager",
          "verification": "v0_pr9298_verification_ms"}
SOURCE = ("vLLM PR #9298 (comment, 2024-10-25): V0 SpecDecodeWorker stage times, v0.6.3.post2, Meta-Llama-3-8B + "
          "Qwama-0.5B draft, 1x A10, batch 16, k = 3")


class V0Error(ValueError):
    """The stage times a V0 calibration needs are missing from the published measurements."""


def pr9298_terms(measures: list[Measure]) -> dict[str, float]:
    """Eager cost per layer and verification per request from PR #9298's stage times (role `parameter` rows)."""
    rows = {key: parameter(measures, metric) for key, metric in PR9298.items()}
    missing = [PR9298[k] for k, row in rows.items() if row is None]
    if missing:
        raise V0Error(f"a V0 calibration needs PR #9298's stage times: no parameter row {missing[0]!r}")
    eager_layer = (rows["eager"].value - rows["graph"].value) / PR9298_DRAFT_LAYERS
    return {"eager_ms_per_layer": round(eager_layer, 5),
            "verification_ms_per_request": round(rows["verification"].value / PR9298_BATCH, 5)}


def v0_calibration(cal: Calibration, target: Architecture, drafter: Architecture | None,
                   measures: list[Measure]) -> Calibration:
    """The V0 engine of V1 calibration `cal` (its GPU terms and host step costs kept)."""
    terms = pr9298_terms(measures)
    layer = terms["eager_ms_per_layer"]
    draft = cal.draft
    if draft.kind == "sequential":
        draft = replace(draft, first_pass="drafting")  # V0's proposer: one token per request per pass
    provenance = dict(cal.provenance)
    provenance["v0"] = {
        "mechanics": ("batch-expansion scoring (k+1 one-token sequences per request, each reading its whole "
                      "context); CUDA graphs for decode batches of up to 256 sequences, eager above and for "
                      "prefills; proposer passes of one token per request; host verification per request; no "
                      "dynamic-k tax"),
        "eager_ms_per_layer": layer, "verification_ms_per_request": terms["verification_ms_per_request"],
        "source": SOURCE + " (host costs of that A10 machine, used as they are)",
        "not_measured": ("V0's per-sequence scheduling and output processing: the V1 fit's per-request host cost is "
                         "kept; no V0 serving result was fitted")}
    return replace(cal, name=f"{cal.name}-v0", engine="v0", scorer="batch_expansion", draft=draft,
                   cuda_graph_max_batch=V0_CUDA_GRAPH_MAX_BATCH, eager_forward_ms=round(target.layers * layer, 5),
                   eager_draft_forward_ms=round(drafter.layers * layer, 5) if drafter is not None else 0.0,
                   spec_per_request_ms=terms["verification_ms_per_request"], dynamic_k_tax_ms=0.0,
                   dynamic_k_tax_spec_ms=0.0, legacy_spec_per_request_ms=0.0,
                   description=cal.description.replace(": roofline", " as vLLM V0 (2024) ran it: roofline", 1)
                   + " V0 mechanics: batch-expansion scoring, CUDA graphs up to 256 sequences (vLLM PR #9298 stage "
                     "times).", provenance=provenance)


__all__ = ["v0_calibration", "pr9298_terms", "V0Error", "V0_CUDA_GRAPH_MAX_BATCH"]
