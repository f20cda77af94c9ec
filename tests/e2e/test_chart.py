"""The Helm chart: lint and template pass (helm built from its Go module), the rendering is
accepted by the apiserver (server-side dry run), and the operator runs end to end with only
the chart's ServiceAccount and RBAC, which keep it out of namespaces it does not serve."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client

from runnerfleet import conventions as c
from runnerfleet.localcluster import LocalCluster
from runnerfleet.localcluster.binaries import helm_binary
from runnerfleet.sim.operator_process import OperatorProcess
from tests.support.factories import make_scale_set
from tests.support.fleet import Fleet
from tests.support.kube import wait_for

CHART = Path(__file__).resolve().parents[2] / "charts" / "runnerfleet"
CRDS = Path(__file__).resolve().parents[2] / "crds"
ALL_ON = [
    "--set", "metrics.serviceMonitor.enabled=true",
    "--set", "metrics.prometheusRule.enabled=true",
    "--set", "metrics.dashboard.enabled=true",
]  # fmt: skip


def helm(*args: str) -> str:
    done = subprocess.run([str(helm_binary()), *args], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, f"helm {' '.join(args)}: {done.stderr}"
    return done.stdout


def test_chart_crds_are_the_generated_ones() -> None:
    ours = {p.name: p.read_text() for p in CRDS.glob("*.yaml")}
    chart = {p.name: p.read_text() for p in (CHART / "crds").glob("*.yaml")}
    assert chart == ours, "run `make chart-crds`"


def test_helm_lint_passes_with_defaults_and_every_option() -> None:
    helm("lint", "--strict", str(CHART))
    helm("lint", "--strict", str(CHART), *ALL_ON, "--set", "watchNamespaces={a,b}")


def test_values_schema_rejects_bad_values_by_name() -> None:
    done = subprocess.run([str(helm_binary()), "template", "x", str(CHART), "--set", "mode=blue"],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode != 0
    assert "/mode" in done.stderr
    many = subprocess.run(
        [str(helm_binary()), "template", "x", str(CHART), "--set", "replicaCount=3",
         "--set", "leaderElection.enabled=false"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert many.returncode != 0
    assert "leaderElection.enabled" in many.stderr


def _docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def test_rendering_with_every_option_has_the_promised_objects() -> None:
    docs = _docs(helm("template", "rf", str(CHART), "--namespace", "rf-system", *ALL_ON,
                      "--set", "watchNamespaces={team-a,team-b}"))  # fmt: skip
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == sorted({"ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment",
                            "PodDisruptionBudget", "PrometheusRule", "Role", "RoleBinding",
                            "Service", "ServiceAccount", "ServiceMonitor"})  # fmt: skip
    bindings = [d for d in docs if d["kind"] == "RoleBinding"
                and d["roleRef"]["name"] == "rf-runnerfleet-namespaced"]  # fmt: skip
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    # Namespaced access (Secrets, pods) is never bound cluster-wide when namespaces are listed.
    assert not [d for d in docs if d["kind"] == "ClusterRoleBinding"
                and d["roleRef"]["name"].endswith("-namespaced")]  # fmt: skip
    by_name = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ClusterRole"}
    cluster_rules = by_name["rf-runnerfleet-cluster"]["rules"]
    assert not any("secrets" in r["resources"] or "pods" in r["resources"] for r in cluster_rules)
    alerts = {r["alert"] for g in next(d for d in docs if d["kind"] == "PrometheusRule")["spec"][
        "groups"] for r in g["rules"]}  # fmt: skip
    assert {"RunnerfleetListenerDown", "RunnerfleetRunnersFailing", "RunnerfleetQueueWaitHigh",
            "RunnerfleetGitHubRateLimitLow", "RunnerfleetOperatorSaturated",
            "RunnerfleetQueueDepthHigh", "RunnerfleetQueueStuck"} <= alerts  # fmt: skip
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 2
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["RUNNERFLEET_LEADER_ELECT"] == "true"
    assert pod["containers"][0]["image"] == c.DEFAULT_OPERATOR_IMAGE
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["containers"][0]["args"] == ["operator", "--namespace=team-a", "--namespace=team-b"]


@pytest.fixture
def release_namespace(local_cluster: LocalCluster) -> Iterator[str]:
    name = f"rf-{uuid.uuid4().hex[:6]}"
    local_cluster.kubectl("create", "namespace", name)
    yield name
    local_cluster.kubectl("delete", "namespace", name, "--wait=false")


@pytest.mark.usefixtures("crds")
def test_template_is_accepted_by_the_apiserver(
    local_cluster: LocalCluster, release_namespace: str
) -> None:
    for extra in ([], ["--set", f"watchNamespaces={{{release_namespace}}}"]):
        rendered = helm("template", "rf", str(CHART), "--namespace", release_namespace,
                        "--include-crds", *extra)  # fmt: skip
        out = local_cluster.kubectl("apply", "--dry-run=server", "--server-side", "-f", "-",
                                    stdin=rendered)  # fmt: skip
        assert "deployment.apps/rf-runnerfleet serverside-applied (server dry run)" in out


def _token_kubeconfig(cluster: LocalCluster, path: Path, token: str) -> Path:
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    server = admin["clusters"][0]["cluster"]
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "local", "cluster": server}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": "sa"}}],
    }))  # fmt: skip
    return path


async def _can(f: Fleet, user: str, verb: str, resource: str, namespace: str) -> bool:
    review = await client.AuthorizationV1Api(f.kube).create_subject_access_review(
        client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
            user=user, resource_attributes=client.V1ResourceAttributes(
                verb=verb, resource=resource, namespace=namespace))))  # fmt: skip
    return bool(review.status.allowed)


async def test_installed_chart_runs_the_operator_with_only_its_own_rbac(
    running_fleet: Fleet, local_cluster: LocalCluster, tmp_path: Path
) -> None:
    f = running_fleet
    release = f"rf{uuid.uuid4().hex[:6]}"
    rendered = helm(
        "template", release, str(CHART), "--namespace", f.namespace,
        "--set", f"watchNamespaces={{{f.namespace}}}", "--set", "replicaCount=1",
    )  # fmt: skip
    local_cluster.kubectl("apply", "--server-side", "-f", "-", stdin=rendered)
    account = f"{release}-runnerfleet"
    try:
        token = await client.CoreV1Api(f.kube).create_namespaced_service_account_token(
            account, f.namespace, client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)))  # fmt: skip
        kubeconfig = _token_kubeconfig(local_cluster, tmp_path / "sa.kubeconfig",
                                       token.status.token)  # fmt: skip

        # Least privilege where it matters: Secrets and pods only in the served namespace.
        user = f"system:serviceaccount:{f.namespace}:{account}"
        assert await _can(f, user, "get", "secrets", f.namespace)
        assert await _can(f, user, "create", "pods", f.namespace)
        for verb in ("get", "list"):
            assert not await _can(f, user, verb, "secrets", "default")
            assert not await _can(f, user, verb, "secrets", "kube-system")
        assert not await _can(f, user, "create", "pods", "default")

        f.operator.stop()
        operator = OperatorProcess(
            kubeconfig, f.namespace, tmp_path / "sa-operator.log",
            env={"RUNNERFLEET_NAMESPACE": f.namespace, "RUNNERFLEET_LEADER_ELECT": "true",
                 "RUNNERFLEET_LEASE_NAME": account},
        )  # fmt: skip
        operator.start()
        try:
            await f.apply_scale_set(make_scale_set("linux", config_url=f.config_url,
                                                   min_runners=2, scaleDownDelay="1s"))  # fmt: skip
            await f.expect_runners("linux", idle=2)
            job = f.github.enqueue_job("acme/app", ["self-hosted", "linux"], duration=1.0)
            await f.set_demand("linux", 1, sequence=1)
            await wait_for(lambda: f.scale_set("linux"),
                           lambda o: job.conclusion == "success", what="the job ran")  # fmt: skip
            await f.set_demand("linux", 0, sequence=2)
            await f.expect_runners("linux", idle=2)
            api = client.CustomObjectsApi(f.kube)
            await api.delete_namespaced_custom_object(
                c.GROUP, c.VERSION, f.namespace, c.RUNNER_SCALE_SET_PLURAL, "linux"
            )
            await wait_for(lambda: f.pods("linux"), lambda pods: pods == [],
                           what="runner pods cleaned up")  # fmt: skip
            # Pods and Secrets are deleted concurrently: the last pod can go first.
            await wait_for(lambda: f.secrets("linux"), lambda found: found == [],
                           what="runner Secrets cleaned up", within=10)  # fmt: skip
            assert f.registrations("linux") == []
            logs = operator.logs()
            assert "Forbidden" not in logs, logs[-3000:]
            assert " 403" not in logs, logs[-3000:]
        finally:
            operator.stop()
            print(f"---- operator (chart ServiceAccount) log ----\n{operator.logs()[-8000:]}")
    finally:
        local_cluster.kubectl("delete", "-f", "-", "--ignore-not-found", "--wait=false",
                              stdin=rendered)  # fmt: skip


def test_webhook_relay_objects_only_when_enabled() -> None:
    """Off by default; on, its own ServiceAccount with read-only RBAC (TeamListeners and
    Leases cluster-wide, Secrets by `get` only, list/watch only of the installation Secret),
    a stateless 2-replica Deployment and the Service GitHub's webhook points at."""
    relay = "rf-runnerfleet-webhook-relay"
    assert not [d for d in _docs(helm("template", "rf", str(CHART)))
                if d["metadata"]["name"] == relay]  # fmt: skip
    docs = _docs(helm("template", "rf", str(CHART), "--namespace", "rf-system",
                      "--set", "webhookRelay.enabled=true",
                      "--set", "webhookRelay.secretRef.name=org-hook"))  # fmt: skip
    ours = {d["kind"]: d for d in docs if d["metadata"]["name"] == relay}
    assert sorted(ours) == ["ClusterRole", "ClusterRoleBinding", "Deployment",
                            "PodDisruptionBudget", "Role", "RoleBinding", "Service",
                            "ServiceAccount"]  # fmt: skip
    rules = {(r["apiGroups"][0], r["resources"][0]): r for r in ours["ClusterRole"]["rules"]}
    assert rules[("runnerfleet.dev", "teamlisteners")]["verbs"] == ["get", "list", "watch"]
    assert rules[("coordination.k8s.io", "leases")]["verbs"] == ["get", "list", "watch"]
    assert rules[("", "secrets")]["verbs"] == ["get"]
    assert all(set(r["verbs"]) <= {"get", "list", "watch"} for r in rules.values())
    [own] = ours["Role"]["rules"]
    assert own["resourceNames"] == ["org-hook"]
    deployment = ours["Deployment"]
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == relay
    container = pod["containers"][0]
    assert container["args"] == ["webhook-relay"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["RUNNERFLEET_RELAY_SECRET_NAME"] == "org-hook"
    assert env["RUNNERFLEET_RELAY_SECRET_KEY"] == "github_webhook_secret"
    assert "RUNNERFLEET_LEADER_ELECT" not in env  # any replica serves any delivery
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert ours["Service"]["spec"]["selector"] == selector
    assert selector["app.kubernetes.io/component"] == "webhook-relay"
    assert ours["Service"]["spec"]["ports"][0]["targetPort"] == "webhook"
    missing = subprocess.run(
        [str(helm_binary()), "template", "x", str(CHART), "--set", "webhookRelay.enabled=true"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert missing.returncode != 0
    assert "webhookRelay.secretRef.name" in missing.stderr
    helm("lint", "--strict", str(CHART), "--set", "webhookRelay.enabled=true",
         "--set", "webhookRelay.secretRef.name=org-hook")  # fmt: skip
