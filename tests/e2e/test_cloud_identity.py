"""Cloud identity against the local control plane (issue 13 item 6): a scale set naming a
ServiceAccount gets runner pods running as it with a projected token of the audience (as the
apiserver stored them, and the apiserver issues such a token for the pod); without identity
the pods carry no token at all; a missing ServiceAccount is a condition and an Event, and no
pod. Also: the chart hands the default runner resources to the operator as one setting."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from kubernetes_asyncio import client

from runnerfleet import conventions as c
from runnerfleet.services.identity import parse_default_resources
from tests.e2e.test_chart import CHART, _docs, helm
from tests.support.factories import make_scale_set, make_team_listener
from tests.support.fleet import Fleet
from tests.support.kube import wait_for

AUDIENCE = "sts.amazonaws.com"


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def _identity(account: str, **more: Any) -> dict[str, Any]:
    return {"identity": {"serviceAccountName": account, **more}}


async def _create_account(f: Fleet, name: str) -> None:
    await client.CoreV1Api(f.kube).create_namespaced_service_account(
        f.namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
    )


async def test_identity_projects_the_token_unset_has_none_missing_is_a_condition(
    running_fleet: Fleet,
) -> None:
    f = running_fleet
    core = client.CoreV1Api(f.kube)
    await _create_account(f, "ci-deployer")
    await f.apply_scale_set(make_scale_set("ci", config_url=f.config_url, min_runners=1,
        **_identity("ci-deployer", tokenAudience=AUDIENCE, tokenExpirationSeconds=3600,
                    egress=["awsPodIdentity"])))  # fmt: skip
    await f.apply_scale_set(make_scale_set("plain", config_url=f.config_url, min_runners=1))
    await f.apply_scale_set(make_scale_set("ghost", config_url=f.config_url, min_runners=2,
                                           **_identity("not-there")))  # fmt: skip

    # Missing ServiceAccount: a condition naming the field, an Event, no pod, no registration.
    missing = await f.wait_condition("rss", "ghost", "PodsAdmitted", "False",
                                     "ServiceAccountNotFound")  # fmt: skip
    assert "spec.identity.serviceAccountName" in missing["message"]
    assert "'not-there'" in missing["message"]
    events = await wait_for(
        lambda: core.list_namespaced_event(f.namespace),
        lambda found: any(e.reason == "ServiceAccountNotFound"
                          and e.involved_object.name == "ghost" for e in found.items),
        what="a ServiceAccountNotFound Event on ghost",
    )  # fmt: skip
    assert events is not None

    await f.expect_runners("ci", idle=1)
    await f.expect_runners("plain", idle=1)
    assert await f.pods("ghost") == []
    assert f.registrations("ghost") == []

    # The pod as the apiserver stored it: runs as the account, one projected token of the
    # audience mounted in the runner container, no Kubernetes API token.
    [pod] = await f.pods("ci")
    assert pod.spec.service_account_name == "ci-deployer"
    assert pod.spec.automount_service_account_token is False
    [volume] = pod.spec.volumes
    assert volume.name == c.IDENTITY_TOKEN_VOLUME
    [source] = volume.projected.sources
    token = source.service_account_token
    assert (token.audience, token.expiration_seconds, token.path) == (AUDIENCE, 3600, "token")
    runner = next(x for x in pod.spec.containers if x.name == c.RUNNER_CONTAINER)
    assert [(m.name, m.mount_path, m.read_only) for m in runner.volume_mounts] == [
        (c.IDENTITY_TOKEN_VOLUME, c.IDENTITY_TOKEN_DIR, True)
    ]
    assert {e.name: e.value for e in runner.env}[c.IDENTITY_TOKEN_ENV] == c.IDENTITY_TOKEN_FILE
    assert pod.metadata.labels[f"{c.LABEL_IDENTITY_EGRESS_PREFIX}awsPodIdentity"] == "true"

    # What the kubelet would project: the apiserver issues the account a token of that
    # audience bound to this pod (the local kubelets are simulated and mount nothing).
    bound = client.V1BoundObjectReference(
        api_version="v1", kind="Pod", name=pod.metadata.name, uid=pod.metadata.uid
    )
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(
            audiences=[AUDIENCE], expiration_seconds=3600, bound_object_ref=bound
        )
    )
    issued = await core.create_namespaced_service_account_token("ci-deployer", f.namespace, request)
    claims = _claims(issued.status.token)
    assert claims["aud"] == [AUDIENCE]
    assert claims["sub"] == f"system:serviceaccount:{f.namespace}:ci-deployer"
    assert claims["kubernetes.io"]["pod"]["name"] == pod.metadata.name

    # Unset: exactly today's pod, no token of any kind.
    [plain] = await f.pods("plain")
    assert plain.spec.automount_service_account_token is False
    assert not plain.spec.volumes
    assert not any(m for x in plain.spec.containers for m in (x.volume_mounts or []))
    assert not any(k.startswith(c.LABEL_IDENTITY_EGRESS_PREFIX) for k in plain.metadata.labels)

    # The team's identity-endpoint NetworkPolicies are accepted by the apiserver as rendered
    # (IPv4 and IPv6 blocks), next to its main policy, and select only opted-in runners.
    await f.apply_team_listener(make_team_listener(
        "team-a", team="team-a", config_url=f.config_url, repositories=["app"]))  # fmt: skip
    net = client.NetworkingV1Api(f.kube)
    names = {"team-a-runners", "team-a-runners-aws-pod-identity", "team-a-runners-gke-metadata"}
    found = await wait_for(
        lambda: net.list_namespaced_network_policy(f.namespace),
        lambda got: {p.metadata.name for p in got.items} >= names,
        what=f"NetworkPolicies {sorted(names)}",
    )  # fmt: skip
    aws = next(p for p in found.items if p.metadata.name == "team-a-runners-aws-pod-identity")
    assert aws.spec.pod_selector.match_labels[f"{c.LABEL_IDENTITY_EGRESS_PREFIX}awsPodIdentity"]
    assert [b.ip_block.cidr for b in aws.spec.egress[0].to] == [
        "169.254.170.23/32", "fd00:ec2::23/128",
    ]  # fmt: skip


@pytest.mark.slow
async def test_creating_the_missing_account_lets_runners_start(running_fleet: Fleet) -> None:
    """The ServiceAccount check is cached for 30 s (found or not): once the platform team
    creates it, runners start within that plus a round."""
    f = running_fleet
    await f.apply_scale_set(make_scale_set("late", config_url=f.config_url, min_runners=1,
                                           **_identity("late-account")))  # fmt: skip
    await f.wait_condition("rss", "late", "PodsAdmitted", "False", "ServiceAccountNotFound")
    await _create_account(f, "late-account")
    await f.expect_runners("late", idle=1, within=90)
    await f.wait_condition("rss", "late", "PodsAdmitted", "True")


def test_chart_passes_default_runner_resources_as_one_setting() -> None:
    def setting(*args: str) -> str | None:
        docs = _docs(helm("template", "rf", str(CHART), *args))
        [deployment] = [d for d in docs if d["kind"] == "Deployment"
                        and d["metadata"]["name"].endswith("runnerfleet")]  # fmt: skip
        env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        return next((e["value"] for e in env if e["name"] == c.RUNNER_DEFAULT_RESOURCES_ENV), None)

    default = setting()
    assert default is not None
    assert parse_default_resources(default) == {
        "requests": {"cpu": "500m", "memory": "1Gi", "ephemeral-storage": "4Gi"},
        "limits": {"memory": "4Gi", "ephemeral-storage": "20Gi"},
    }
    assert setting("--set", "runnerDefaults.resources=null") is None
