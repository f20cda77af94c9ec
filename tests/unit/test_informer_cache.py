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


def test_cached_runner_pods_keep_what_the_planner_reads_and_not_their_spec() -> None:
    """At 5,000 runners the pod specs (containers, env, volumes) were most of the operator's
    memory and nothing reads them from the cache: only metadata, the node and how the
    containers ended are kept, and the observer reads the same outcome from either."""
    from runnerfleet.planning.observe import observe

    terminated = {"terminated": {"reason": "OOMKilled", "finishedAt": "2026-12-02T00:00:00Z"}}
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "r1", "namespace": "ns", "resourceVersion": "7",
                     "labels": {"runnerfleet.dev/runner": "r1"},
                     "annotations": {"x": "y"}, "deletionTimestamp": "2026-12-02T00:00:01Z"},
        "spec": {"nodeName": "n1", "containers": [{"name": "runner", "image": "i",
                                                   "env": [{"name": "A", "value": "1"}] * 40}],
                 "volumes": [{"name": "work", "emptyDir": {}}] * 5},
        "status": {"phase": "Failed", "reason": "Evicted", "conditions": [{"type": "Ready"}] * 4,
                   "containerStatuses": [{"name": "runner", "image": "i", "imageID": "x",
                                          "state": terminated, "lastState": {}, "ready": False}]},
    }  # fmt: skip
    pods = Informer(cast(Any, None), "pods", None, "x")
    pods.upsert(pod)
    cached = pods.get("ns", "r1")
    assert cached is not None
    assert cached["spec"] == {"nodeName": "n1"}
    assert "conditions" not in cached["status"]
    assert cached["status"]["containerStatuses"] == [
        {"name": "runner", "state": terminated, "lastState": {}}
    ]
    assert cached["metadata"]["annotations"] == {"x": "y"}
    assert "containers" in pod["spec"], "the caller's object is not modified"
    full = observe("s", "ns", [pod], [], [], None, 0.0)
    kept = observe("s", "ns", [cached], [], [], None, 0.0)
    assert kept == full
    assert (kept[0].pod_phase, kept[0].pod_reason) == ("Failed", "OOMKilled")


def test_a_namespace_read_sees_only_that_namespace_and_deletions_prune_it() -> None:
    """Rounds read their own namespace's objects from a per-namespace index (a flat scan of
    the fleet's 10,000 pods and Secrets per round grew with the fleet); writes, watch events
    and deletions keep the index right."""
    pods = Informer(cast(Any, None), "pods", None, "x")
    for ns in range(50):
        for i in range(20):
            meta = {"name": f"r{i}", "namespace": f"team-{ns}", "resourceVersion": "1",
                    "labels": {"set": str(i % 2)}}  # fmt: skip
            pods.upsert({"metadata": meta})
    assert len(pods) == 1000
    assert len(pods.items("team-7", {})) == 20
    assert {p["metadata"]["name"] for p in pods.items("team-7", {"set": "1"})} == {
        f"r{i}" for i in range(1, 20, 2)
    }
    assert pods.items("elsewhere", {}) == []
    moved = {"name": "r1", "namespace": "team-7", "resourceVersion": "2", "labels": {"set": "0"}}
    pods._apply("MODIFIED", {"metadata": moved})
    assert len(pods.items("team-7", {"set": "1"})) == 9
    for i in range(20):
        pods._apply("DELETED", {"metadata": {"name": f"r{i}", "namespace": "team-7",
                                              "resourceVersion": "3"}})  # fmt: skip
    assert pods.items("team-7", {}) == []
    assert "team-7" not in pods._store, "an emptied namespace leaves nothing behind"
    assert len(pods) == 980


async def test_a_quiet_first_list_wakes_nobody_and_a_relist_reports_every_object() -> None:
    """The operator's runner informers: a new leader's first list must not wake every scale
    set's loop (their first rounds are spread); a re-list after a 410 is a change."""

    class Listing:
        def __init__(self) -> None:
            self.items = [{"metadata": {"name": "r1", "namespace": "ns", "resourceVersion": "1"}}]

        async def raw_list(
            self, path: str, selector: str, field_selector: str, limit: int, token: str
        ) -> Any:
            return {"metadata": {"resourceVersion": "9"}, "items": self.items}

    changed: list[str] = []
    pods = Informer(cast(Any, Listing()), "pods", None, "x", lambda o: changed.append(
        o["metadata"]["name"]), quiet_first_list=True)  # fmt: skip
    assert await pods._list() == "9"
    assert pods.synced.is_set()
    assert changed == []
    assert pods.get("ns", "r1") is not None
    await pods._list()  # a re-list (after 410 Gone)
    assert changed == ["r1"]
    loud = Informer(cast(Any, Listing()), "pods", None, "x", lambda o: changed.append("loud"))
    await loud._list()
    assert changed[-1] == "loud", "by default the first list reports every object"


async def test_a_list_is_read_in_pages_and_swapped_in_whole() -> None:
    """A 5,000-pod list decoded at once was a replica's memory peak: the informer reads it in
    pages (limit + continue, as client-go's reflectors). Readers during a re-list see the
    previous cache, never half of the new one."""
    from runnerfleet.gateways import informer as module

    def pod(i: int) -> dict[str, Any]:
        return {"metadata": {"name": f"r{i}", "namespace": "ns", "resourceVersion": str(i)}}

    class Paged:
        def __init__(self) -> None:
            self.asked: list[tuple[int, str]] = []
            self.seen_during: list[int] = []

        async def raw_list(
            self, path: str, selector: str, field_selector: str, limit: int, token: str
        ) -> Any:
            self.asked.append((limit, token))
            self.seen_during.append(len(pods))
            start = int(token or 0)
            items = [pod(i) for i in range(start, min(start + limit, 5))]
            more = start + limit < 5
            meta = {"resourceVersion": "77", **({"continue": str(start + limit)} if more else {})}
            return {"metadata": meta, "items": items}

    paged = Paged()
    pods = Informer(cast(Any, paged), "pods", None, "x")
    pods.upsert(pod(99))  # what a previous list left
    saved, module.LIST_PAGE = module.LIST_PAGE, 2
    try:
        assert await pods._list() == "77"
    finally:
        module.LIST_PAGE = saved
    assert paged.asked == [(2, ""), (2, "2"), (2, "4")]
    assert paged.seen_during == [1, 1, 1], "the old cache stays whole until the last page"
    assert sorted(o["metadata"]["name"] for o in pods.items("ns", {})) == [
        "r0",
        "r1",
        "r2",
        "r3",
        "r4",
    ]
