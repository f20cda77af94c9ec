"""The TeamListener planner (planning/team_listener.py), with no cluster: children applied only
when missing, changed, drifted or due for resync; refusals remembered; a status that does not
change between polls."""

from __future__ import annotations

from typing import Any

from runnerfleet.builders.listener import ListenerIdentity, build_children
from runnerfleet.models.team_listener import TeamListenerSpec
from runnerfleet.planning.children import Applied
from runnerfleet.planning.status import rfc3339
from runnerfleet.planning.status_diff import status_patch
from runnerfleet.planning.team_listener import (
    ListenerMemory,
    after_apply,
    fold_status,
    plan,
    status_wire,
)
from tests.support.factories import make_team_listener

NOW = 1_760_000_000.0
OWNER = ListenerIdentity(name="team-a", namespace="ns", uid="uid-1", image="img:1")


def children(**spec: Any) -> tuple[list[dict[str, Any]], str]:
    parsed = TeamListenerSpec.model_validate(make_team_listener(**spec)["spec"])
    return build_children(OWNER, parsed)


def deployment(manifests: list[dict[str, Any]], generation: int = 1) -> dict[str, Any]:
    anchor = manifests[-1]
    return {**anchor, "metadata": {**anchor["metadata"], "generation": generation},
            "status": {"readyReplicas": 1}}  # fmt: skip


def test_children_carry_one_hash_on_the_deployment_that_follows_the_spec() -> None:
    manifests, digest = children()
    assert [m["kind"] for m in manifests][-1] == "Deployment"
    assert deployment(manifests)["metadata"]["annotations"]["runnerfleet.dev/spec-hash"] == digest
    assert children()[1] == digest  # deterministic
    assert children(pollInterval="5s")[1] != digest
    other = ListenerIdentity(name="team-a", namespace="ns", uid="uid-1", image="img:2")
    spec = TeamListenerSpec.model_validate(make_team_listener()["spec"])
    assert build_children(other, spec)[1] != digest  # a new image re-applies too


def test_missing_children_are_applied_then_left_alone() -> None:
    manifests, digest = children()
    first = plan(digest, None, ListenerMemory(), NOW)
    assert (first.apply, first.problem) == ("missing", None)
    memory = after_apply(digest, deployment(manifests, 3), None, NOW)
    assert memory.applied == Applied(digest, 3, NOW)
    steady = plan(digest, deployment(manifests, 3), memory, NOW + 3)
    assert steady.apply is None
    assert steady.memory == memory


def test_spec_change_hand_edit_and_resync_each_reapply() -> None:
    manifests, digest = children()
    memory = after_apply(digest, deployment(manifests, 3), None, NOW)
    _, new_digest = children(pollInterval="5s")
    assert plan(new_digest, deployment(manifests, 3), memory, NOW + 3).apply == "changed"
    assert plan(digest, deployment(manifests, 4), memory, NOW + 3).apply == "drifted"
    assert plan(digest, deployment(manifests, 3), memory, NOW + 300).apply == "resync"


def test_after_a_restart_current_children_are_adopted_not_reapplied() -> None:
    manifests, digest = children()
    decided = plan(digest, deployment(manifests, 5), ListenerMemory(), NOW)
    assert decided.apply is None
    assert decided.memory.applied == Applied(digest, 5, NOW)
    # The adopted generation is the baseline: a later hand edit is drift.
    assert plan(digest, deployment(manifests, 6), decided.memory, NOW + 3).apply == "drifted"


def test_a_refusal_is_reported_and_not_resent_every_round() -> None:
    _, digest = children()
    refused = after_apply(digest, None, 'Deployment.apps "x" is invalid', NOW)
    held = plan(digest, None, refused, NOW + 3)
    assert (held.apply, held.problem) == (None, 'Deployment.apps "x" is invalid')
    _, fixed = children(pollInterval="5s")
    assert plan(fixed, None, refused, NOW + 3).apply == "missing"
    assert plan(digest, None, refused, NOW + 300).apply == "missing"  # retried at resync


def test_status_does_not_change_between_polls_and_rejection_sets_ready_false() -> None:
    ready = {"readyReplicas": 1}
    poll = {"lastSuccessfulPoll": rfc3339(NOW - 2)}
    first = status_wire(fold_status(ready, {"poll": poll}, 1, 15.0, False, NOW))
    assert [c["status"] for c in first["conditions"]] == ["True", "True"]
    assert "poll" not in first  # the listener's own key
    later = {**first, "poll": {"lastSuccessfulPoll": rfc3339(NOW + 13)}}
    again = status_wire(fold_status(ready, later, 1, 15.0, False, NOW + 15))
    assert status_patch(later, again) is None

    rejected = status_wire(fold_status(ready, later, 1, 15.0, False, NOW + 18, "bad child"))
    patch = status_patch(later, rejected)
    assert patch is not None
    ready_cond = patch["conditions"][0]
    assert (ready_cond["status"], ready_cond["reason"], ready_cond["message"]) == (
        "False", "ChildRejected", "bad child",
    )  # fmt: skip
    assert ready_cond["lastTransitionTime"] == rfc3339(NOW + 18)
    assert patch["conditions"][1] == first["conditions"][1]  # Polling kept, time unmoved


def test_a_rotated_listener_secret_rolls_the_pods_and_shows_only_a_digest() -> None:
    """Listener pods read their GitHub credentials and webhook secret as env, at start only:
    a new digest of those Secrets on the pod template rolls them; the digest, not the data,
    is what the template carries."""
    from dataclasses import replace

    from runnerfleet import conventions as c
    from runnerfleet.builders.listener import listener_secrets

    spec = TeamListenerSpec.model_validate(make_team_listener()["spec"])
    plain, digest = build_children(OWNER, spec)
    template = plain[-1]["spec"]["template"]["metadata"]["annotations"]
    assert c.ANNOTATION_SECRETS_HASH not in template  # unknown yet: nothing to roll for
    first, digest_1 = build_children(replace(OWNER, secrets_hash="aaaa"), spec)
    rotated, digest_2 = build_children(replace(OWNER, secrets_hash="bbbb"), spec)
    assert len({digest, digest_1, digest_2}) == 3, "each digest re-applies the Deployment"
    pod_meta = rotated[-1]["spec"]["template"]["metadata"]["annotations"]
    assert pod_meta[c.ANNOTATION_SECRETS_HASH] == "bbbb"
    assert first[-1]["spec"]["template"] != rotated[-1]["spec"]["template"], "pods roll"
    hooked = TeamListenerSpec.model_validate(make_team_listener(
        webhook={"enabled": True, "secretRef": {"name": "hook"}})["spec"])  # fmt: skip
    assert listener_secrets(hooked) == sorted([spec.github.secret_ref.name, "hook"])
    assert listener_secrets(spec) == [spec.github.secret_ref.name]


def test_a_missing_env_secret_is_ready_false_naming_the_field() -> None:
    """A listener pod naming a missing Secret never starts (CreateContainerConfigError), so
    Ready says so, whatever the Deployment reports; a suspended listener says Suspended."""
    missing = "Secret hook (spec.webhook.secretRef.name) not found: the listener pod cannot start"
    status = fold_status({"readyReplicas": 1}, {}, 1, 5.0, False, NOW, None, missing)
    ready = next(x for x in status_wire(status)["conditions"] if x["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "SecretNotFound")
    assert "spec.webhook.secretRef.name" in ready["message"]
    suspended = fold_status(None, {}, 1, 5.0, True, NOW, None, missing)
    ready = next(x for x in status_wire(suspended)["conditions"] if x["type"] == "Ready")
    assert ready["reason"] == "Suspended"


def test_an_invalid_spec_is_ready_false_naming_the_field_and_wins_over_a_refusal() -> None:
    ready = {"replicas": 1, "readyReplicas": 1}
    why = "spec.extraEgress[0].cidr: '1:2/64' is not a CIDR"
    status = status_wire(fold_status(ready, {}, 3, 15.0, False, NOW, "bad child", invalid=why))
    cond = status["conditions"][0]
    assert (cond["type"], cond["status"], cond["reason"]) == ("Ready", "False", "InvalidSpec")
    assert cond["message"] == f"{why}; nothing applied until it is fixed"
    assert status["listenerReady"] is True  # the last valid spec's pod still runs


CIDRS_OK = ["10.0.0.0/8", "10.1.2.3/24", "0.0.0.0/0", "255.255.255.255/32", "fd00::/64",
            "::/0", "2001:db8::1/128", "::ffff:10.0.0.0/104"]  # fmt: skip
CIDRS_BAD = ["not-a-cidr", "10.0.0.0", "10.0.0.0/33", "256.0.0.0/8", "010.0.0.0/8",
             "10.0.0/8", "fd00::/129", "fd00::", "10.0.0.0/8 "]  # fmt: skip


def test_extra_egress_cidrs_the_crd_pattern_and_the_operator_agree_on() -> None:
    """The CRD's pattern refuses what is not CIDR-shaped; the operator's check refuses
    exactly what `ipaddress` does, including what only looks like one. The model itself
    takes any string: the listener and the relay read the spec and must not fail on it."""
    import re

    from runnerfleet.models.team_listener import CIDR_PATTERN
    from runnerfleet.planning.team_listener import invalid_egress

    def spec(*cidrs: str) -> TeamListenerSpec:
        body = make_team_listener(extraEgress=[{"cidr": x} for x in cidrs])["spec"]
        return TeamListenerSpec.model_validate(body)  # never raises for a CIDR

    for cidr in CIDRS_OK:
        assert re.fullmatch(CIDR_PATTERN, cidr), cidr
        assert invalid_egress(spec(cidr)) is None, cidr
    for cidr in CIDRS_BAD:
        assert not re.fullmatch(CIDR_PATTERN, cidr), cidr
        assert invalid_egress(spec(cidr)) is not None, cidr
    for shaped_only in ("1:2/64", ":::/64", "1.2.3.4:5/64"):
        assert re.fullmatch(CIDR_PATTERN, shaped_only), shaped_only
        assert invalid_egress(spec(shaped_only)) is not None, shaped_only

    assert invalid_egress(spec("10.0.0.0/8", "1:2/64")) == (
        "spec.extraEgress[1].cidr: '1:2/64' is not a CIDR "
        "('1:2/64' does not appear to be an IPv4 or IPv6 network)"
    )


def test_a_spec_error_names_the_field_by_its_wire_path() -> None:
    import pytest
    from pydantic import ValidationError

    from runnerfleet.models.base import invalid_field

    body = make_team_listener(extraEgress=[{"cidr": "10.0.0.0/8"}, {"cidr": "x", "ports": ["a"]}])
    with pytest.raises(ValidationError) as err:
        TeamListenerSpec.model_validate(body["spec"])
    assert invalid_field(err.value).startswith("spec.extraEgress[1].ports[0]: ")
