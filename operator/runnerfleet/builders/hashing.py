"""Content hashes of rendered manifests, stamped on the objects the operator applies.

A child is re-applied only when what the operator would send differs from what it last sent:
the hash of the built manifest(s) goes on the object as the `runnerfleet.dev/spec-hash`
annotation (metadata, not the pod template, so stamping it rolls nothing), and the planner
compares it with the live object's. The hash covers the whole manifest, so a spec change, a new
operator image or a changed builder all count as "changed".

Layer: builders. Pure.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from runnerfleet import conventions as c


def manifests_hash(manifests: list[dict[str, Any]]) -> str:
    """16 hex digits over the manifests as sent, ignoring any hash annotation already on them."""
    bare = []
    for manifest in manifests:
        clean = copy.deepcopy(manifest)
        annotations = clean.get("metadata", {}).get("annotations")
        if annotations is not None:
            annotations.pop(c.ANNOTATION_SPEC_HASH, None)
            if not annotations:
                del clean["metadata"]["annotations"]
        bare.append(clean)
    text = json.dumps(bare, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stamped(manifest: dict[str, Any], digest: str) -> dict[str, Any]:
    """A copy of `manifest` carrying `digest` as its spec-hash annotation."""
    out = copy.deepcopy(manifest)
    meta = out.setdefault("metadata", {})
    meta["annotations"] = {**(meta.get("annotations") or {}), c.ANNOTATION_SPEC_HASH: digest}
    return out
