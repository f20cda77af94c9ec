"""status_patch: a status write only when the computed status differs from the one read."""

from __future__ import annotations

from runnerfleet.planning.status_diff import status_patch

READY = {"type": "Ready", "status": "True", "reason": "Reconciled", "message": "ok",
         "observedGeneration": 2, "lastTransitionTime": "2025-06-01T10:00:00Z"}  # fmt: skip


def test_equal_content_is_no_write() -> None:
    old = {"nodes": 3, "conditions": [READY], "kopf": {"progress": {}}, "poll": {"queued": 1}}
    assert status_patch(old, {"nodes": 3, "conditions": [dict(READY)]}) is None


def test_only_changed_keys_are_sent_and_unowned_keys_are_never_touched() -> None:
    old = {"nodes": 3, "observedGeneration": 2, "demand": {"queued": 5}}
    assert status_patch(old, {"nodes": 4, "observedGeneration": 2}) == {"nodes": 4}


def test_none_removes_a_key_only_when_it_is_there() -> None:
    assert status_patch({"mode": "Static"}, {"mode": None}) == {"mode": None}
    assert status_patch({}, {"mode": None}) is None
    assert status_patch({"mode": None}, {"mode": None}) is None


def test_lists_are_sent_whole_when_any_element_changed() -> None:
    flipped = {**READY, "status": "False", "reason": "NoMatchingNodes"}
    other = {"type": "Polling", "status": "True"}
    patch = status_patch({"conditions": [READY, other]}, {"conditions": [flipped, other]})
    assert patch == {"conditions": [flipped, other]}


def test_nested_objects_are_diffed_key_by_key() -> None:
    old = {"poll": {"queuedJobs": 1, "lastSuccessfulPoll": "t1"}}
    assert status_patch(old, {"poll": {"queuedJobs": 1, "lastSuccessfulPoll": "t2"}}) == {
        "poll": {"lastSuccessfulPoll": "t2"}
    }
    assert status_patch({}, {"poll": {}}) is None  # an empty object is not a change
    assert status_patch({}, {"poll": {"queuedJobs": 0}}) == {"poll": {"queuedJobs": 0}}
