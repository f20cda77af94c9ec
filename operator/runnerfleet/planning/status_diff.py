"""Write status only when it changed: the JSON merge patch that takes the status read to the
status computed, or None when they already agree.

Every reconciler (RunnerScaleSet, TeamListener, RunnerNodePool) computes the keys it owns
each round and asks `status_patch(old, new)` whether there is anything to send. An idle
round then costs no status write, and `lastTransitionTime` (kept by `planning.status.condition`
unless a condition's status flips) does not move.

Layer: planning. Pure.
"""

from __future__ import annotations

from typing import Any


def status_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any] | None:
    """The merge patch (RFC 7386) taking `old` to `new` on the keys `new` names, else None.

    - Only keys present in `new` are compared: keys the writer does not own (the listener's
      `poll`, kopf's `kopf`, a scale set's `demand`) are left out of `new` and never touched.
    - `None` in `new` means "absent": it patches the key away only if `old` has a value.
    - Nested objects are diffed key by key (a merge patch merges them); lists are compared
      whole and sent whole (a merge patch replaces lists), so a condition list is sent
      complete whenever any condition changed.
    """
    patch: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and (before is None or isinstance(before, dict)):
            nested = status_patch(before or {}, value)
            if nested is not None:
                patch[key] = nested
        elif value is None:
            if before is not None:
                patch[key] = None
        elif value != before:
            patch[key] = value
    return patch or None
