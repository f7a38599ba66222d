"""Tree-style (Medusa-like) speculation: expected and sampled accepted length of a draft tree.

smartspec-reference.md section 3 ("Tree-style (Medusa)") records, as [RECALL-UNVERIFIED], that
the paper scores a candidate path by the product of confidences along it and adds candidates
greedily, highest cumulative confidence first. No tree code exists in the authors' releases, so
the acceptance model here is our own, stated precisely:

* Every draft position offers ranked candidate tokens. The rank-c candidate is the token the
  target model emits with probability p_c = alpha * ((1 - alpha) * SIBLING_DECAY) ** (c - 1),
  independently at every depth (rank 1 is the chain draft; sum_c p_c <= 1, the rest is
  "no candidate is right").
* A node's path probability is the product of p_c along its path from the root. Exactly one
  path can be right, so E[accepted] = sum over tree nodes of their path probabilities.
* The tree of `num_nodes` nodes is built greedily by expected gain: repeatedly add the frontier
  candidate (next unused rank under an existing node, or first child of a node) with the
  largest path probability. Path probabilities fall along every path, so this best-first tree
  maximises E[accepted] for its size, and the i-th node added is the i-th marginal gain.
* With SIBLING_DECAY = 0 the tree is a chain and E[accepted] = alpha + ... + alpha^k.

The engine uses k = num_nodes (verify tokens k + 1) and calls `sample_accepted_tree`.
"""
from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from functools import lru_cache

SIBLING_DECAY = 0.5  # how fast lower-ranked sibling candidates lose probability (see docstring)


@dataclass(frozen=True)
class DraftTree:
    """Nodes in insertion order; node i hangs under parents[i] (-1 = root) as candidate ranks[i] (1-based)."""

    parents: tuple[int, ...]
    ranks: tuple[int, ...]
    path_probs: tuple[float, ...]  # in insertion order, non-increasing


def rank_probability(alpha: float, rank: int, sibling_decay: float = SIBLING_DECAY) -> float:
    """p_c: probability that the rank-c candidate is the target's token."""
    alpha = min(max(alpha, 0.0), 1.0)
    return alpha * ((1.0 - alpha) * sibling_decay) ** (rank - 1)


@lru_cache(maxsize=8192)
def build_tree(alpha: float, num_nodes: int, sibling_decay: float = SIBLING_DECAY) -> DraftTree:
    """Best-first tree of num_nodes draft nodes (see the module docstring)."""
    parents: list[int] = []
    ranks: list[int] = []
    probs: list[float] = []
    # frontier entries: (-path_prob, tie, parent_index, rank)
    frontier = [(-rank_probability(alpha, 1, sibling_decay), 0, -1, 1)]
    tie = 1
    while len(parents) < num_nodes and frontier:
        neg_p, _, parent, rank = heapq.heappop(frontier)
        node = len(parents)
        parents.append(parent)
        ranks.append(rank)
        probs.append(-neg_p)
        parent_p = 1.0 if parent < 0 else probs[parent]
        sibling_p = parent_p * rank_probability(alpha, rank + 1, sibling_decay)
        child_p = -neg_p * rank_probability(alpha, 1, sibling_decay)
        for p, par, r in ((sibling_p, parent, rank + 1), (child_p, node, 1)):
            if p > 0.0:
                heapq.heappush(frontier, (-p, tie, par, r))
                tie += 1
    return DraftTree(tuple(parents), tuple(ranks), tuple(probs))


def tree_node_gains(alpha: float, num_nodes: int, sibling_decay: float = SIBLING_DECAY) -> tuple[float, ...]:
    """Expected accepted tokens added by the 1st, 2nd, ... node of the greedy tree."""
    return build_tree(alpha, num_nodes, sibling_decay).path_probs


def expected_accepted_tree(alpha: float, num_nodes: int, sibling_decay: float = SIBLING_DECAY) -> float:
    """E[accepted draft tokens] (bonus token excluded) for the best-first tree of num_nodes nodes."""
    if num_nodes <= 0:
        return 0.0
    return float(sum(tree_node_gains(alpha, num_nodes, sibling_decay)))


def sample_accepted_tree(alpha: float, num_nodes: int, rng: random.Random,
                         sibling_decay: float = SIBLING_DECAY) -> int:
    """Draw the accepted length (draft tokens, bonus excluded) of one verification of the tree."""
    if num_nodes <= 0:
        return 0
    tree = build_tree(alpha, num_nodes, sibling_decay)
    children: dict[tuple[int, int], int] = {(p, r): i for i, (p, r) in enumerate(zip(tree.parents, tree.ranks))}
    node, accepted = -1, 0
    while True:
        u, rank, cum = rng.random(), 0, 0.0
        while True:  # which rank (if any) is the target's token at this depth
            rank += 1
            if (node, rank) not in children:
                return accepted
            cum += rank_probability(alpha, rank, sibling_decay)
            if u < cum:
                break
        node = children[(node, rank)]
        accepted += 1


@lru_cache(maxsize=4096)
def _chain_depth_cached(alpha: float, nodes: int) -> int:
    tree = build_tree(alpha, nodes)
    on_chain, depth = {-1}, 0
    for i, (parent, rank) in enumerate(zip(tree.parents, tree.ranks)):
        if rank == 1 and parent in on_chain:
            on_chain.add(i)
            depth += 1
    return depth


def chain_depth(alpha: float, nodes: int) -> int:
    """Depth of the rank-1 (best) path in the best-first tree of `nodes` nodes (`build_tree`)."""
    if nodes <= 0:
        return 0
    return _chain_depth_cached(round(min(max(alpha, 0.0), 0.999), 3), nodes)


__all__ = ["SIBLING_DECAY", "DraftTree", "build_tree", "tree_node_gains", "expected_accepted_tree",
           "sample_accepted_tree", "rank_probability", "chain_depth"]
