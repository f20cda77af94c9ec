"""Cloud identity and hardening of runner pods (issue 13 items 6-7), pure: golden pods with
identity, hardening and default resources; the team's identity-endpoint NetworkPolicies;
the ServiceAccount check's cost (one GET per TTL, shared)."""

from __future__ import annotations

import ipaddress
import json
from typing import Any, cast

import pytest

from runnerfleet import conventions as c
from runnerfleet.builders.hardening import apply_hardening
from runnerfleet.builders.identity import ENDPOINT_EGRESS, egress_label
from runnerfleet.builders.listener import ListenerIdentity, build_all
from runnerfleet.builders.runner import ScaleSetIdentity, build_runner_pod, runner_template_hash
from runnerfleet.models.team_listener import TeamListenerSpec
from runnerfleet.services import identity as identity_service
from runnerfleet.services.runtime import Runtime
from tests.support.golden import GOLDEN, golden, runner_spec

OWNER = ScaleSetIdentity(name="linux", namespace="team-a", uid="1234", team="team-a")
RUNNER = "linux-abcd12345"
DEFAULTS = {
    "requests": {"cpu": "500m", "memory": "1Gi", "ephemeral-storage": "2Gi"},
    "limits": {"memory": "4Gi", "ephemeral-storage": "20Gi"},
}
IDENTITY = {
    "serviceAccountName": "ci-deployer",
    "tokenAudience": "sts.amazonaws.com",
    "tokenExpirationSeconds": 7200,
    "egress": ["awsPodIdentity"],
}


def _runner(pod: dict[str, Any]) -> dict[str, Any]:
    return next(x for x in pod["spec"]["containers"] if x["name"] == c.RUNNER_CONTAINER)


# ------------------------------------------------------------------------------- goldens
def test_pod_with_identity_matchesgolden() -> None:
    golden(
        "runner_pod_identity.json", build_runner_pod(OWNER, runner_spec(identity=IDENTITY), RUNNER)
    )


def test_pod_with_hardening_matchesgolden() -> None:
    spec = runner_spec(hardening={"readOnlyRootFilesystem": True})
    golden("runner_pod_hardening.json", build_runner_pod(OWNER, spec, RUNNER))


def test_pod_with_default_resources_matchesgolden() -> None:
    pod = build_runner_pod(OWNER, runner_spec(), RUNNER, default_resources=DEFAULTS)
    golden("runner_pod_defaults.json", pod)


# ------------------------------------------------------------------------------- identity
def test_unset_identity_is_exactly_todays_pod_without_any_token() -> None:
    pod = build_runner_pod(OWNER, runner_spec(), RUNNER)
    assert pod == json.loads((GOLDEN / "runner_pod_default.json").read_text()) | {
        "metadata": pod["metadata"]  # OWNER here has a team label; the golden's has none
    }
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in pod["spec"]
    assert "volumes" not in pod["spec"]
    assert not any(k.startswith(c.LABEL_IDENTITY_EGRESS_PREFIX) for k in pod["metadata"]["labels"])


def test_identity_runs_as_the_account_with_one_projected_token_of_the_audience() -> None:
    pod = build_runner_pod(OWNER, runner_spec(identity=IDENTITY), RUNNER)
    spec = pod["spec"]
    assert spec["serviceAccountName"] == "ci-deployer"
    assert spec["automountServiceAccountToken"] is False  # no Kubernetes API token
    [volume] = spec["volumes"]
    assert volume == {
        "name": c.IDENTITY_TOKEN_VOLUME,
        "projected": {"sources": [{"serviceAccountToken": {
            "audience": "sts.amazonaws.com", "expirationSeconds": 7200, "path": "token"}}]},
    }  # fmt: skip
    runner = _runner(pod)
    assert runner["volumeMounts"] == [
        {"name": c.IDENTITY_TOKEN_VOLUME, "mountPath": c.IDENTITY_TOKEN_DIR, "readOnly": True}
    ]
    assert {"name": c.IDENTITY_TOKEN_ENV, "value": c.IDENTITY_TOKEN_FILE} in runner["env"]
    # The clouds' webhooks own their variables and volume names: none of them is set here.
    names = {e["name"] for e in runner["env"]}
    assert not names & {"AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AZURE_FEDERATED_TOKEN_FILE"}
    assert c.IDENTITY_TOKEN_VOLUME not in ("aws-iam-token", "azure-identity-token")


def test_identity_without_audience_projects_no_token_and_sidecars_get_none() -> None:
    template = {"spec": {"containers": [{"name": "runner"}, {"name": "cache", "image": "c:1"}]}}
    bare = runner_spec(identity={"serviceAccountName": "ci"}, template=template)
    pod = build_runner_pod(OWNER, bare, RUNNER)
    assert pod["spec"]["serviceAccountName"] == "ci"
    assert "volumes" not in pod["spec"]
    with_token = build_runner_pod(OWNER, runner_spec(identity=IDENTITY, template=template), RUNNER)
    cache = with_token["spec"]["containers"][1]
    assert "volumeMounts" not in cache
    assert "env" not in cache


def test_identity_overrides_the_templates_account_and_egress_labels_cannot_be_spoofed() -> None:
    spoof = {egress_label("gkeMetadataServer"): "true"}
    template = {
        "metadata": {"labels": spoof},
        "spec": {"serviceAccount": "other", "serviceAccountName": "other"},
    }
    plain = build_runner_pod(OWNER, runner_spec(template=template), RUNNER)
    assert egress_label("gkeMetadataServer") not in plain["metadata"]["labels"]
    pod = build_runner_pod(OWNER, runner_spec(identity=IDENTITY, template=template), RUNNER)
    assert pod["spec"]["serviceAccountName"] == "ci-deployer"
    assert "serviceAccount" not in pod["spec"]
    labels = pod["metadata"]["labels"]
    assert labels[egress_label("awsPodIdentity")] == "true"
    assert egress_label("gkeMetadataServer") not in labels


def test_identity_model_bounds() -> None:
    with pytest.raises(ValueError, match=r"tokenExpirationSeconds|token_expiration_seconds"):
        runner_spec(identity={"serviceAccountName": "a", "tokenExpirationSeconds": 60})
    with pytest.raises(ValueError, match="egress"):
        runner_spec(identity={"serviceAccountName": "a", "egress": ["azureImds"]})
    with pytest.raises(ValueError, match=r"serviceAccountName|service_account_name"):
        runner_spec(identity={"serviceAccountName": "Not/A Name"})


# ------------------------------------------------------------------------------- NetworkPolicy
LISTENER = ListenerIdentity(name="team-a", namespace="team-a", uid="u1", image="img:1")


def _policies() -> list[dict[str, Any]]:
    spec = TeamListenerSpec.model_validate({
        "team": "team-a",
        "github": {"configUrl": "https://github.com/acme", "secretRef": {"name": "gh"}},
        "repositories": {"names": ["app"]},
    })  # fmt: skip
    return [m for m in build_all(LISTENER, spec) if m["kind"] == "NetworkPolicy"]


def _selects(policy: dict[str, Any], pod: dict[str, Any]) -> bool:
    wanted = policy["spec"]["podSelector"]["matchLabels"].items()
    return wanted <= pod["metadata"]["labels"].items()


def _allows(policies: list[dict[str, Any]], pod: dict[str, Any], ip: str, port: int) -> bool:
    """Whether any policy selecting the pod allows egress to ip:port (TCP), as a CNI would."""
    address = ipaddress.ip_address(ip)
    for policy in policies:
        if not _selects(policy, pod):
            continue
        for rule in policy["spec"].get("egress", []):
            ports = {p["port"] for p in rule.get("ports", [])}
            if ports and port not in ports:
                continue
            for peer in rule.get("to", [{"ipBlock": {"cidr": "0.0.0.0/0"}}]):
                block = peer["ipBlock"]
                if address in ipaddress.ip_network(block["cidr"]) and not any(
                    address in ipaddress.ip_network(x) for x in block.get("except", [])
                ):
                    return True
    return False


METADATA = [("169.254.169.254", 80), ("169.254.169.254", 443), ("169.254.169.252", 988),
            ("169.254.170.23", 80), ("fd00:ec2::23", 80)]  # fmt: skip


def test_default_runner_blocks_every_metadata_and_identity_endpoint() -> None:
    policies = _policies()
    pod = build_runner_pod(OWNER, runner_spec(), RUNNER)
    assert sum(_selects(p, pod) for p in policies) == 1  # only the team's main policy
    for ip, port in METADATA:
        assert not _allows(policies, pod, ip, port), (ip, port)
    assert _allows(policies, pod, "140.82.112.3", 443)  # github.com still reachable


def test_opt_in_opens_exactly_the_chosen_endpoint() -> None:
    policies = _policies()
    aws = build_runner_pod(OWNER, runner_spec(identity=IDENTITY), RUNNER)
    opened = {(ip, port) for ip, port in METADATA if _allows(policies, aws, ip, port)}
    assert opened == {("169.254.170.23", 80), ("fd00:ec2::23", 80)}
    gke_spec = runner_spec(identity={"serviceAccountName": "ci", "egress": ["gkeMetadataServer"]})
    gke = build_runner_pod(OWNER, gke_spec, RUNNER)
    opened = {(ip, port) for ip, port in METADATA if _allows(policies, gke, ip, port)}
    assert opened == {("169.254.169.254", 80), ("169.254.169.252", 988)}
    assert not _allows(policies, gke, "169.254.169.254", 8080)
    other_team = build_runner_pod(
        ScaleSetIdentity("linux", "team-a", "1", team="team-b"),
        runner_spec(identity=IDENTITY),
        RUNNER,
    )
    assert not _allows(policies, other_team, "169.254.170.23", 80)


def test_identity_policies_are_egress_only_and_cover_every_endpoint() -> None:
    identity = [p for p in _policies() if p["metadata"]["name"] != "team-a-runners"]
    assert {p["metadata"]["name"] for p in identity} == {
        "team-a-runners-aws-pod-identity", "team-a-runners-gke-metadata",
    }  # fmt: skip
    assert all(p["spec"]["policyTypes"] == ["Egress"] for p in identity)
    prefix = c.LABEL_IDENTITY_EGRESS_PREFIX
    selected = {next(k for k in p["spec"]["podSelector"]["matchLabels"] if k.startswith(prefix))
                for p in identity}  # fmt: skip
    assert selected == {egress_label(e) for e in ENDPOINT_EGRESS}


# ------------------------------------------------------------------------------- hardening
def test_read_only_root_has_writable_runner_home_work_and_tmp() -> None:
    pod = build_runner_pod(OWNER, runner_spec(hardening={"readOnlyRootFilesystem": True}), RUNNER)
    runner = _runner(pod)
    assert runner["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in runner["volumeMounts"]}
    assert mounts == {"/home/runner": "runner-home", c.RUNNER_WORK_DIR: c.WORK_VOLUME,
                      "/tmp": "tmp"}  # fmt: skip
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert all("emptyDir" in volumes[name] for name in mounts.values())
    [copier] = pod["spec"]["initContainers"]
    assert copier["image"] == runner["image"]
    assert copier["securityContext"]["allowPrivilegeEscalation"] is False
    assert copier["securityContext"]["runAsNonRoot"] is True


def test_a_work_volume_already_there_is_kept_for_container_modes() -> None:
    claim = {"name": c.WORK_VOLUME, "ephemeral": {"volumeClaimTemplate": {"spec": {}}}}
    spec = runner_spec(hardening={"readOnlyRootFilesystem": True})
    pod = build_runner_pod(OWNER, runner_spec(), RUNNER)
    pod["spec"]["volumes"] = [claim]
    apply_hardening(pod, spec)
    assert [v for v in pod["spec"]["volumes"] if v["name"] == c.WORK_VOLUME] == [claim]
    other = build_runner_pod(OWNER, runner_spec(), RUNNER)
    apply_hardening(other, spec, work=lambda s: claim)
    assert claim in other["spec"]["volumes"]


def test_templates_resources_win_over_the_defaults_even_partly_set() -> None:
    limits_only = {"limits": {"cpu": "2"}}
    template = {"spec": {"containers": [{"name": "runner", "resources": limits_only}]}}
    pod = build_runner_pod(
        OWNER, runner_spec(template=template), RUNNER, default_resources=DEFAULTS
    )
    assert _runner(pod)["resources"] == limits_only
    bare = build_runner_pod(OWNER, runner_spec(), RUNNER, default_resources=DEFAULTS)
    assert _runner(bare)["resources"] == DEFAULTS
    sidecar = {"spec": {"containers": [{"name": "runner"}, {"name": "cache", "image": "c"}]}}
    pod = build_runner_pod(OWNER, runner_spec(template=sidecar), RUNNER, default_resources=DEFAULTS)
    assert "resources" not in pod["spec"]["containers"][1]  # the default is the runner's only


def test_default_resources_setting_is_parsed_or_refused_whole() -> None:
    parse = identity_service.parse_default_resources
    assert parse(json.dumps(DEFAULTS)) == DEFAULTS
    assert parse('{"requests": {"cpu": 1}}') == {"requests": {"cpu": "1"}}  # YAML numbers
    assert parse('{"requests": {"cpu": true}}') is None
    assert parse('{"requests": {"cpu": {"x": 1}}}') is None
    assert parse('{"cpu": "1"}') is None
    assert parse("not json") is None
    assert parse("{}") is None


# ------------------------------------------------------------------------------- cost
class _Kube:
    def __init__(self, present: set[str]) -> None:
        self.present = present
        self.gets = 0

    async def get_service_account(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.gets += 1
        return {"metadata": {"name": name}} if name in self.present else None


async def test_service_account_check_is_one_get_per_ttl_shared_found_or_not() -> None:
    kube = _Kube({"ci"})
    runtime = Runtime(kube=cast(Any, kube))
    owners = [ScaleSetIdentity(f"s{i}", "team-a", str(i)) for i in range(20)]
    found = runner_spec(identity={"serviceAccountName": "ci"})
    missing = runner_spec(identity={"serviceAccountName": "ghost"})
    for _ in range(5):  # five rounds of twenty scale sets
        for owner in owners:
            assert await identity_service.identity_problem(runtime, found, owner) is None
            problem = await identity_service.identity_problem(runtime, missing, owner)
            assert problem is not None
            assert (problem.condition, problem.reason) == ("PodsAdmitted", "ServiceAccountNotFound")
            assert "spec.identity.serviceAccountName" in problem.message
            assert "'ghost'" in problem.message
    assert kube.gets == 2
    assert await identity_service.identity_problem(runtime, runner_spec(), owners[0]) is None
    assert kube.gets == 2  # no identity: no read at all


def test_identity_and_hardening_roll_runners_default_resources_do_not() -> None:
    """The template hash (rollouts) covers the spec's identity and hardening; the operator's
    default resources are a setting outside it, so changing them replaces no runner."""
    base = runner_template_hash(OWNER, runner_spec())
    assert runner_template_hash(OWNER, runner_spec(identity=IDENTITY)) != base
    assert (
        runner_template_hash(OWNER, runner_spec(hardening={"readOnlyRootFilesystem": True})) != base
    )
    with_defaults = build_runner_pod(OWNER, runner_spec(), RUNNER, default_resources=DEFAULTS)
    assert with_defaults["metadata"]["labels"][c.LABEL_TEMPLATE_HASH] == base
