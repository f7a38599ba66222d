"""Checks `simulate` runs before the first policy: every option, policy, calibration and output path that
cannot work fails here, in one line, instead of after minutes of simulation."""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from specdec_sim.simulator.config import ConfigError, SimConfig


def policy_slug(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", spec).strip("_") or "policy"


def check_policy_fits(spec: str, policy: Any, config: SimConfig) -> None:
    """Refuse a policy whose own k (or k_max) exceeds --max-k: it would run capped, under a false label."""
    for attr in ("k", "k_max"):
        k = getattr(policy, attr, None)
        if isinstance(k, int) and not isinstance(k, bool) and k > config.max_k:
            raise ConfigError(f"--policy {spec!r}: {attr}={k} exceeds --max-k {config.max_k}, so it would run at "
                              f"k={config.max_k}; raise --max-k (at most 64) or lower {attr}")


def check_policies(specs: list[str], config: SimConfig) -> None:
    """Every spec builds, fits --max-k, and names its own output directory."""
    from specdec_sim.policies import make_policy

    seen: dict[str, str] = {}
    for spec in specs:
        check_policy_fits(spec, make_policy(spec), config)
        slug = policy_slug(spec)
        if slug in seen:
            raise ConfigError(f"--policy {spec!r}: same run (directory {slug}) as {seen[slug]!r}; give it once")
        seen[slug] = spec


def check_out(out: Path, specs: list[str]) -> None:
    """Create --out and prove it writable, before anything runs; one line naming the problem otherwise."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".simulate-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    for spec in specs:
        target = out / policy_slug(spec)
        if target.exists() and not target.is_dir():
            raise ConfigError(f"--out {out}: {target.name} is a file, but policy {spec!r} needs it as a directory")


def file_sha256(path: str) -> str | None:
    """SHA-256 of a file's bytes (None if it cannot be read)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()
