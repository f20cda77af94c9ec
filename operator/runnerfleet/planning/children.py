"""When to (re-)apply a rendered child: the drift rule shared by TeamListener and RunnerNodePool.

Applying every child every round (server-side apply is idempotent) costs one write per child
per round per object. Instead each group of children has an *anchor* object the reconciler
reads anyway (the listener Deployment, the Karpenter NodePool, the warm-capacity Deployment);
the builder stamps the hash of the whole group's manifests on the anchor
(`runnerfleet.dev/spec-hash`), and the group is applied again only when:

- `missing`: the anchor is gone (deleted by hand, or never created);
- `changed`: the anchor's hash differs from the desired one (spec, image or builder changed);
- `drifted`: the anchor's `metadata.generation` moved since the operator applied it (someone
  edited or scaled it: only spec changes move `generation`, status updates do not);
- `resync`: the resync interval passed since the last apply (repairs hand edits of the
  children that are not read each round: RBAC, Service, NetworkPolicy, PriorityClass).

`Applied` is the reconciler's in-process memory of its last apply. After a restart there is
none: a current anchor is adopted (`adoptions`: its generation becomes the baseline), not
re-applied, so a leader change costs no writes.

Layer: planning. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runnerfleet import conventions as c

RESYNC_SECONDS = 300.0


@dataclass(frozen=True)
class Applied:
    """What the operator last sent for a group of children, and what the apiserver made of it."""

    hash: str
    generation: int | None  # the anchor's metadata.generation after the apply
    at: float  # wall clock of the apply (or of the adoption after a restart)


def live_hash(obj: dict[str, Any] | None) -> str | None:
    """The spec-hash annotation on a live object, if any."""
    annotations = ((obj or {}).get("metadata") or {}).get("annotations") or {}
    value = annotations.get(c.ANNOTATION_SPEC_HASH)
    return None if value is None else str(value)


def live_generation(obj: dict[str, Any] | None) -> int | None:
    value = ((obj or {}).get("metadata") or {}).get("generation")
    return None if value is None else int(value)


def apply_reason(
    desired_hash: str,
    anchor: dict[str, Any] | None,
    last: Applied | None,
    now: float,
    resync: float = RESYNC_SECONDS,
) -> str | None:
    """Why the group must be applied this round (`missing`/`changed`/`drifted`/`resync`), or
    None when the live objects are what the operator last sent."""
    if anchor is None:
        return "missing"
    if live_hash(anchor) != desired_hash:
        return "changed"
    if last is None:
        return None  # adopted (see `adoptions`)
    if last.hash == desired_hash and last.generation not in (None, live_generation(anchor)):
        return "drifted"
    if now - last.at >= resync:
        return "resync"
    return None


def adoptions(
    anchors: list[tuple[str, str, dict[str, Any] | None]], memory: dict[str, Applied], now: float
) -> dict[str, Applied]:
    """Memory to seed for groups seen for the first time (after a restart) whose anchor is
    current: (key, desired hash, live anchor) each. Their generation becomes the baseline."""
    return {
        key: Applied(digest, live_generation(anchor), now)
        for key, digest, anchor in anchors
        if key not in memory and anchor is not None and live_hash(anchor) == digest
    }
