"""Acceptance: how many drafted tokens the target accepts, from published rates or from measured spans.

The ground floor beside `costmodel` (it imports only the trace record model and `safe_output`):

* `rates`: the acceptance-length maths (expected tokens, AL <-> alpha, the goodput-best uniform k)
  and the published presets (`SOURCE.md` lists their sources);
* `draws`: per-request rates and per-step accepted drafts (and prompt lookup's matches) of a replica;
* `tree`: tree-style drafting's expected and sampled acceptance;
* `spec_metrics`: vLLM's spec-decode summary keys from the draw counters;
* `records`, `spans`, `measured`: acceptance traces (measured spans per request), their replay, and
  which simulated request replays or samples what;
* `profile`, `sampler`, `fit` (+ `shift`, `lead`, `copies`): the fitted per-request acceptance
  profile, its sampler and its fitter; `cli`: `fit-acceptance`;
* `ngram_spans`: the spans vLLM's n-gram proposer would produce on given token ids.

Nothing is imported here: a run imports only the modules it uses.
"""
