"""TeamListener children (pure): least-privilege RBAC, rolling on spec change, NetworkPolicy."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from runnerfleet import conventions as c
from runnerfleet.builders.listener import ListenerIdentity, build_all, spec_hash
from runnerfleet.models.team_listener import TeamListenerSpec

OWNER = ListenerIdentity(name="team-a", namespace="team-a", uid="u1", image="img:1")
GOLDEN = Path(__file__).parent / "golden" / "team_listener_children.json"


def _spec(**overrides: Any) -> TeamListenerSpec:
    body = {
        "team": "team-a",
        "github": {"configUrl": "https://github.com/acme", "secretRef": {"name": "gh"}},
        "repositories": {"names": ["app"]},
        **overrides,
    }
    return TeamListenerSpec.model_validate(body)


def _by_kind(spec: TeamListenerSpec) -> dict[str, dict[str, Any]]:
    """The first child of each kind (the team's main NetworkPolicy before the identity ones)."""
    found: dict[str, dict[str, Any]] = {}
    for manifest in build_all(OWNER, spec):
        found.setdefault(manifest["kind"], manifest)
    return found


def test_children_match_golden() -> None:
    text = json.dumps(build_all(OWNER, _spec()), indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert GOLDEN.read_text() == text


def test_role_reads_scale_sets_writes_only_status_and_one_secret() -> None:
    rules = _by_kind(_spec())["Role"]["rules"]
    granted = {(r["resources"][0], v) for r in rules for v in r["verbs"]}
    assert ("runnerscalesets/status", "patch") in granted
    assert ("runnerscalesets", "patch") not in granted
    assert ("runnerscalesets", "update") not in granted
    # Of Secrets, only `get` on its registration-token Secret (not the credentials Secret).
    secrets = [r for r in rules if "secrets" in r["resources"]]
    assert secrets == [{"apiGroups": [""], "resources": ["secrets"],
                        "resourceNames": ["team-a-registration"], "verbs": ["get"]}]  # fmt: skip
    own = [r for r in rules if r["resources"][0].startswith("teamlisteners")]
    assert all(r["resourceNames"] == ["team-a"] for r in own)


def test_spec_change_rolls_the_deployment_and_suspend_scales_to_zero() -> None:
    a, b = _spec(), _spec(pollInterval="30s")
    assert spec_hash(a) != spec_hash(b)
    template = _by_kind(b)["Deployment"]["spec"]["template"]
    assert template["metadata"]["annotations"][c.ANNOTATION_SPEC_HASH] == spec_hash(b)
    assert _by_kind(_spec(suspend=True))["Deployment"]["spec"]["replicas"] == 0


def test_webhook_secret_comes_by_reference_only() -> None:
    spec = _spec(webhook={"enabled": True, "secretRef": {"name": "hook"}})
    env = _by_kind(spec)["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]
    hook = next(e for e in env if e["name"] == "RUNNERFLEET_WEBHOOK_SECRET")
    assert hook["valueFrom"]["secretKeyRef"] == {"name": "hook", "key": "github_webhook_secret"}
    assert all("value" not in e for e in env if "SECRET" in e["name"])


def test_network_policy_denies_ingress_allows_dns_443_and_allowlist() -> None:
    spec = _spec(extraEgress=[{"cidr": "10.9.0.0/16", "ports": [5000]}])
    policy = _by_kind(spec)["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"] == {
        c.LABEL_TEAM: "team-a", c.LABEL_COMPONENT: c.COMPONENT_RUNNER,
    }  # fmt: skip
    assert policy["ingress"] == []
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    dns, https, extra = policy["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert https["ports"] == [{"protocol": "TCP", "port": 443}]
    assert https["to"][0]["ipBlock"]["except"] == ["169.254.169.254/32"]
    assert extra == {"to": [{"ipBlock": {"cidr": "10.9.0.0/16"}}],
                     "ports": [{"protocol": "TCP", "port": 5000}]}  # fmt: skip
