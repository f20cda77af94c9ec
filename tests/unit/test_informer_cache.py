"""What an informer keeps in memory (pure: no apiserver is contacted)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from runnerfleet.gateways.informer import Informer


def test_cached_objects_keep_their_metadata_but_not_managed_fields() -> None:
    """At 1,000 scale sets the operator caches thousands of pods and Secrets: server-side
    apply's managedFields (unused, often the bulk of a small object) are not kept."""
    pods = Informer(cast(Any, None), "pods", None, "x")
    pod = {
        "metadata": {"name": "r1", "namespace": "ns", "resourceVersion": "5",
                     "labels": {"a": "b"}, "managedFields": [{"manager": "kubelet"}] * 50},
        "status": {"phase": "Running"},
    }  # fmt: skip
    pods.upsert(pod)
    cached = pods.get("ns", "r1")
    assert cached is not None
    assert "managedFields" not in cached["metadata"]
    assert cached["metadata"]["labels"] == {"a": "b"}
    assert cached["metadata"]["resourceVersion"] == "5"
    assert cached["status"] == {"phase": "Running"}
    assert "managedFields" in pod["metadata"], "the caller's object is not modified"


def test_an_informer_for_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="no informer for 'nodes'"):
        Informer(cast(Any, None), "nodes", None, "x")
