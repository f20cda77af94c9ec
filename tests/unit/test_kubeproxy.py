"""The chaos proxy's decisions (tests/support/kubeproxy.py): what is a watch, what is a status
write, and that its 409 and 410 answers are shaped as the apiserver's are."""

from __future__ import annotations

import json

from tests.support.kubeproxy import conflict_body, gone_event, is_status_write, is_watch


def test_watches_are_told_by_the_watch_parameter() -> None:
    assert is_watch({"watch": "true", "resourceVersion": "12"})
    assert is_watch({"watch": "1"})
    assert not is_watch({"watch": "false"})
    assert not is_watch({"labelSelector": "a=b"})


def test_only_status_subresource_writes_are_status_writes() -> None:
    path = "/apis/runnerfleet.dev/v1alpha1/namespaces/ns/runnerscalesets/rs/status"
    assert is_status_write("PATCH", path)
    assert is_status_write("PUT", path)
    assert not is_status_write("GET", path)
    assert not is_status_write("PATCH", path.removesuffix("/status"))


def test_conflict_names_the_object_as_the_apiserver_does() -> None:
    body = conflict_body("/apis/runnerfleet.dev/v1alpha1/namespaces/ns/runnerscalesets/rs/status")
    assert body["code"] == 409
    assert body["reason"] == "Conflict"
    assert 'runnerscalesets.runnerfleet.dev "rs"' in body["message"]
    assert body["details"] == {"name": "rs", "group": "runnerfleet.dev", "kind": "runnerscalesets"}
    core = conflict_body("/api/v1/namespaces/ns/pods/p/status")
    assert 'on pods "p"' in core["message"]


def test_gone_is_one_error_event_line_with_a_410_status() -> None:
    line = gone_event()
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    event = json.loads(line)
    assert event["type"] == "ERROR"
    assert event["object"]["code"] == 410
    assert event["object"]["kind"] == "Status"
