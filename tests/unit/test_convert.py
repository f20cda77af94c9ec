"""`runnerfleet convert` (pure part): ARC-shaped inputs under tests/unit/fixtures/arc/ in,
runnerfleet manifests, warnings naming the source keys, notes and Secrets to create out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from runnerfleet import conventions as c
from runnerfleet.models.node_pool import RunnerNodePoolSpec
from runnerfleet.models.runner_scale_set import RunnerScaleSetSpec
from runnerfleet.models.team_listener import TeamListenerSpec
from runnerfleet.planning.convert import ConvertError, ConvertOptions, ConvertResult, convert

ARC = Path(__file__).parent / "fixtures" / "arc"
MODELS = {
    c.RUNNER_SCALE_SET_KIND: RunnerScaleSetSpec,
    c.TEAM_LISTENER_KIND: TeamListenerSpec,
    c.RUNNER_NODE_POOL_KIND: RunnerNodePoolSpec,
}


def _run(*names: str, **options: Any) -> ConvertResult:
    inputs = [(n, list(yaml.safe_load_all((ARC / n).read_text()))) for n in names]
    return convert(inputs, ConvertOptions(**options))


def _docs(inputs: dict[str, Any], **options: Any) -> ConvertResult:
    return convert([(n, [d]) for n, d in inputs.items()], ConvertOptions(**options))


def _one(result: ConvertResult, kind: str, name: str) -> dict[str, Any]:
    [found] = [m for m in result.manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    return found


def _paths(result: ConvertResult) -> set[tuple[str, str]]:
    return {(w.source, w.path) for w in result.warnings}


def test_values_without_loss_convert_every_key_and_exit_lossless() -> None:
    result = _run("values-lossless.yaml", team="platform")
    assert result.lossless, [str(w) for w in result.warnings]
    rss = _one(result, c.RUNNER_SCALE_SET_KIND, "arc-linux")
    assert rss["metadata"] == {
        "name": "arc-linux", "namespace": "arc-runners",
        "labels": {c.LABEL_TEAM: "platform"},
    }  # fmt: skip
    spec = rss["spec"]
    assert spec["github"] == {
        "configUrl": "https://github.com/acme", "secretRef": {"name": "arc-github-app"},
        "runnerGroup": "linux-runners",
    }  # fmt: skip
    assert spec["labels"] == ["arc-linux", "linux", "x64"]  # the name is a label, as in ARC
    assert (spec["minRunners"], spec["maxRunners"]) == (1, 20)
    assert spec["containerMode"] == {
        "type": "kubernetes",
        "workVolumeClaim": {
            "accessModes": ["ReadWriteOnce"], "storageClassName": "fast-ssd", "size": "4Gi",
        },
    }  # fmt: skip
    runner = spec["template"]["spec"]["containers"][0]
    assert runner["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}}
    listener = _one(result, c.TEAM_LISTENER_KIND, "platform")
    assert listener["spec"]["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"}}
    assert listener["spec"]["repositories"] == {"all": True}
    assert listener["spec"]["scaleSetSelector"] == {"matchLabels": {c.LABEL_TEAM: "platform"}}
    assert [n.path for n in result.notes] == ["controllerServiceAccount"]


def test_every_manifest_is_valid_against_our_models() -> None:
    names = ["values-lossless.yaml", "values-lossy.yaml", "autoscalingrunnerset.yaml"]
    for name in [*names, "legacy.yaml"]:
        for manifest in _run(name).manifests:
            assert manifest["apiVersion"] == c.API_VERSION
            MODELS[manifest["kind"]].model_validate(manifest["spec"])


def test_unmappable_values_keys_are_warnings_naming_them() -> None:
    result = _run("values-lossy.yaml", team="app")
    source = "values-lossy.yaml"
    assert _paths(result) == {(source, p) for p in (
        "githubConfigSecret", "maxRunners",
        "listenerTemplate.metadata", "listenerTemplate.spec.nodeSelector",
        "listenerTemplate.spec.containers[0].securityContext",
        "listenerTemplate.spec.containers[1]",
        "proxy.http", "proxy.https", "proxy.noProxy",
        "githubServerTLS.certificateFrom", "githubServerTLS.runnerMountPath",
        "listenerMetrics",
    )}  # fmt: skip
    assert not result.lossless
    assert "unbounded" in next(w.message for w in result.warnings if w.path == "maxRunners")


def test_inline_credentials_are_never_written_only_a_secret_to_create() -> None:
    result = _run("values-lossy.yaml", team="app")
    everything = json.dumps(result.to_json())
    assert "NOT-A-REAL-KEY" not in everything
    assert "12345" not in everything
    [secret] = result.secrets
    assert (secret.name, secret.keys) == ("app-builders-github-config", (
        "github_app_id", "github_app_installation_id", "github_app_private_key"))  # fmt: skip
    rss = _one(result, c.RUNNER_SCALE_SET_KIND, "app-builders")
    assert rss["spec"]["github"]["secretRef"] == {"name": "app-builders-github-config"}


def test_values_template_maps_service_account_node_selector_and_dind() -> None:
    result = _run("values-lossy.yaml", team="app")
    spec = _one(result, c.RUNNER_SCALE_SET_KIND, "app-builders")["spec"]
    assert spec["labels"] == ["App Builders"]  # ARC's name (jobs' runs-on) stays a label
    assert spec["containerMode"] == {"type": "dind"}
    assert spec["identity"] == {"serviceAccountName": "app-builder"}
    assert "serviceAccountName" not in spec["template"]["spec"]
    assert spec["template"]["spec"]["tolerations"] == [
        {"key": "ci", "operator": "Exists", "effect": "NoSchedule"}]  # fmt: skip
    pool = _one(result, c.RUNNER_NODE_POOL_KIND, spec["nodePool"])
    assert pool["spec"] == {
        "teams": ["app"], "static": {"nodeSelector": {"pool": "builders"}},
        "allowPrivileged": True,
    }  # fmt: skip
    listener = _one(result, c.TEAM_LISTENER_KIND, "app")["spec"]
    assert listener["github"]["configUrl"] == "https://github.com/acme"  # repository -> org
    assert listener["repositories"] == {"names": ["app"]}
    assert listener["resources"] == {"limits": {"cpu": "200m"}}


def test_autoscaling_runner_sets_from_a_multi_document_manifest() -> None:
    result = _run("autoscalingrunnerset.yaml")
    f = "autoscalingrunnerset.yaml"
    assert _paths(result) == {
        (f"{f}#1", "kind"), (f"{f}#2", "spec.vaultConfig"), (f"{f}#2", "spec.listenerMetrics"),
        (f"{f}#2", "spec.autoscalingListener"), (f"{f}#2", "spec.ephemeralRunnerMetadata"),
    }  # fmt: skip
    main = _one(result, c.RUNNER_SCALE_SET_KIND, "arc-runner-set")
    # the team defaults to the namespace; ARC's and Helm's labels are dropped, users' kept
    assert main["metadata"]["labels"] == {"cost-center": "ci", c.LABEL_TEAM: "arc-runners"}
    assert "annotations" not in main["metadata"]
    assert main["spec"]["labels"] == ["arc-runner-set", "gpu"]
    assert main["spec"]["github"]["runnerGroup"] == "default"
    small = _one(result, c.RUNNER_SCALE_SET_KIND, "small")  # runnerScaleSetName wins
    assert (small["spec"]["minRunners"], small["spec"]["maxRunners"]) == (2, 4)
    assert [m["kind"] for m in result.manifests] == [
        c.TEAM_LISTENER_KIND, c.RUNNER_SCALE_SET_KIND, c.RUNNER_SCALE_SET_KIND]  # fmt: skip
    assert {n.path for n in result.notes} >= {"metadata.labels.app.kubernetes.io/managed-by"}


def test_legacy_deployment_with_its_autoscaler() -> None:
    result = _run("legacy.yaml", team="builders")
    spec = _one(result, c.RUNNER_SCALE_SET_KIND, "acme-builders")["spec"]
    assert spec["github"] == {
        "configUrl": "https://github.com/acme", "secretRef": {"name": "acme-app"},
        "runnerGroup": "Builders",
    }  # fmt: skip
    assert spec["labels"] == ["self-hosted", "linux", "docker"]
    assert (spec["minRunners"], spec["maxRunners"], spec["scaleDownDelay"]) == (1, 8, "300s")
    assert spec["containerMode"] == {"type": "dind"}  # dockerdWithinRunnerContainer
    assert spec["identity"] == {"serviceAccountName": "builder"}
    runner = spec["template"]["spec"]["containers"][0]
    assert runner == {
        "name": "runner",
        "env": [{"name": "FOO", "value": "bar"}],
        "resources": {"requests": {"cpu": "2"}},
    }  # summerwind image dropped
    assert spec["template"]["metadata"] == {"labels": {"app": "builders"}}
    pool = _one(result, c.RUNNER_NODE_POOL_KIND, spec["nodePool"])
    assert pool["spec"]["allowPrivileged"] is True
    listener = _one(result, c.TEAM_LISTENER_KIND, "builders")["spec"]
    assert listener["repositories"] == {"names": ["app", "api", "tools"]}


def test_legacy_warnings_name_each_key() -> None:
    result = _run("legacy.yaml", team="builders")
    f = "legacy.yaml"
    rd = "spec.template.spec"
    assert _paths(result) == {
        (f"{f}#1", f"{rd}.image"), (f"{f}#1", f"{rd}.ephemeral"),
        (f"{f}#1", f"{rd}.dockerMTU"), (f"{f}#1", f"{rd}.dockerRegistryMirror"),
        (f"{f}#1", f"{rd}.workDir"),
        (f"{f}#2", "spec.metrics[1].type"), (f"{f}#2", "spec.scaleUpTriggers[0]"),
        (f"{f}#2", "spec.scheduledOverrides[0]"),  # lowers the minimum
        (f"{f}#2", "spec.scheduledOverrides[1].recurrenceRule.untilTime"),
        (f"{f}#2", "spec.scheduledOverrides[3]"),  # monthly
        (f"{f}#2", "spec.capacityReservations[0]"),
        # the second deployment: no credentials of its own, so not the listener's Secret
        (f"{f}#3", f"{rd}.githubAPICredentialsFrom"), (f"{f}#3", rd),
    }  # fmt: skip
    assert [str(s) for s in result.secrets] == [
        f"ci/controller-manager (keys: github_token; from {f}#3: githubAPICredentialsFrom)"
    ]


def test_legacy_scheduled_overrides_that_raise_the_minimum_become_floors() -> None:
    result = _run("legacy.yaml", team="builders")
    spec = _one(result, c.RUNNER_SCALE_SET_KIND, "acme-builders")["spec"]
    assert spec["scheduledFloors"] == [
        {"name": "scheduledOverrides-1", "days": ["Mon"], "start": "08:00:00", "end": "19:00:00",
         "timeZone": "Etc/GMT-9", "minRunners": 4},
        {"name": "scheduledOverrides-2", "start": "22:00:00", "end": "06:00:00",
         "timeZone": "UTC", "minRunners": 2},
    ]  # fmt: skip
    by_path = {w.path: w.message for w in result.warnings}
    assert "lowers the minimum" in by_path["spec.scheduledOverrides[0]"]
    assert "recurrence Monthly" in by_path["spec.scheduledOverrides[3]"]


def test_legacy_kubernetes_mode_and_fixed_replicas() -> None:
    result = _run("legacy.yaml", team="builders")
    spec = _one(result, c.RUNNER_SCALE_SET_KIND, "repo-runner")["spec"]
    assert spec["github"]["configUrl"] == "https://github.com/acme/tools"
    assert (spec["minRunners"], spec["maxRunners"]) == (1, 1)  # replicas unset: 1
    claim = {"storageClassName": "standard", "accessModes": ["ReadWriteOnce"], "size": "2Gi"}
    assert spec["containerMode"] == {"type": "kubernetes", "workVolumeClaim": claim}


def test_legacy_github_url_option_for_ghes() -> None:
    rd = {"apiVersion": "actions.summerwind.dev/v1alpha1", "kind": "RunnerDeployment",
          "metadata": {"name": "e"}, "spec": {"template": {"spec": {
              "enterprise": "acme", "dockerEnabled": False,
              "githubAPICredentialsFrom": {"secretRef": {"name": "s"}}}}}}  # fmt: skip
    result = _docs({"rd.yaml": rd}, github_url="https://ghes.example")
    spec = _one(result, c.RUNNER_SCALE_SET_KIND, "e")["spec"]
    assert spec["github"]["configUrl"] == "https://ghes.example/enterprises/acme"
    assert "containerMode" not in spec
    assert result.lossless


def test_an_autoscaler_without_its_deployment_is_a_warning() -> None:
    hra = {"apiVersion": "actions.summerwind.dev/v1alpha1", "kind": "HorizontalRunnerAutoscaler",
           "metadata": {"name": "h"}, "spec": {"scaleTargetRef": {"name": "gone"}}}  # fmt: skip
    result = _docs({"hra.yaml": hra})
    assert _paths(result) == {("hra.yaml", "spec.scaleTargetRef")}
    assert result.manifests == []


def test_dind_without_a_node_selector_warns_about_the_privileged_pool() -> None:
    values = {"githubConfigUrl": "https://github.com/acme", "githubConfigSecret": "s",
              "maxRunners": 3, "containerMode": {"type": "dind"}, "mystery": 1}  # fmt: skip
    result = _docs({"v.yaml": values})
    assert {w.path for w in result.warnings} == {"containerMode", "mystery"}
    assert "allowPrivileged" in next(
        w.message for w in result.warnings if w.path == "containerMode"
    )


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        ({"githubConfigUrl": "not-a-url", "githubConfigSecret": "s"}, "githubConfigUrl"),
        ({"githubConfigUrl": "https://github.com/a"}, "githubConfigSecret"),
        (
            {
                "githubConfigUrl": "https://github.com/a",
                "githubConfigSecret": "s",
                "minRunners": 3,
                "maxRunners": 2,
            },
            "maxRunners",
        ),
        (
            {
                "githubConfigUrl": "https://github.com/a",
                "githubConfigSecret": "s",
                "containerMode": {"type": "podman"},
            },
            "containerMode.type",
        ),
        (
            {
                "githubConfigUrl": "https://github.com/a",
                "githubConfigSecret": "s",
                "template": ["x"],
            },
            "template",
        ),
        ({"runnerScaleSetName": "x"}, "githubConfigUrl"),
        (
            {
                "apiVersion": "actions.summerwind.dev/v1alpha1",
                "kind": "RunnerDeployment",
                "metadata": {"name": "r"},
                "spec": {"template": {"spec": {}}},
            },
            "spec.template.spec",
        ),
    ],
)
def test_bad_input_names_the_file_and_the_key(doc: dict[str, Any], path: str) -> None:
    with pytest.raises(ConvertError) as err:
        _docs({"in.yaml": doc})
    assert (err.value.source, err.value.path) == ("in.yaml", path)
    assert str(err.value).startswith(f"in.yaml: {path}: ")


def test_bad_file_level_inputs() -> None:
    with pytest.raises(ConvertError, match=r"bad-min\.yaml: spec\.minRunners"):
        _run("bad-min.yaml")
    with pytest.raises(ConvertError, match="team"):
        _run("values-lossless.yaml", team="Not A Label")
    with pytest.raises(ConvertError, match="also comes from"):
        _run("values-lossless.yaml", "values-lossless.yaml")


def test_output_order_is_stable_whatever_the_input_order() -> None:
    names = ["values-lossless.yaml", "autoscalingrunnerset.yaml", "legacy.yaml"]
    forward = _run(*names, team="t").manifests
    backward = _run(*reversed(names), team="t").manifests
    assert forward == backward
    kinds = [m["kind"] for m in forward]
    assert kinds == sorted(kinds, key=[c.RUNNER_NODE_POOL_KIND, c.TEAM_LISTENER_KIND,
                                       c.RUNNER_SCALE_SET_KIND].index)  # fmt: skip


def _runner_set(name: str, template: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "actions.github.com/v1alpha1", "kind": "AutoscalingRunnerSet",
        "metadata": {"name": name, "namespace": "ci"},
        "spec": {"githubConfigUrl": "https://github.com/acme", "githubConfigSecret": "s",
                 "maxRunners": 2, "template": template, **spec},
    }  # fmt: skip


@pytest.mark.parametrize(
    "template",
    [
        {"spec": {"containers": [{"name": "runner", "env": [
            {"name": "ACTIONS_RUNNER_CONTAINER_HOOKS", "value": "/home/runner/k8s/index.js"}]}]}},
        {"spec": {"containers": [{"name": "runner"}], "initContainers": [
            {"name": "dind", "image": "docker:dind", "restartPolicy": "Always"}]}},
    ],
)  # fmt: skip
def test_a_template_the_chart_expanded_for_a_container_mode_is_a_warning(
    template: dict[str, Any],
) -> None:
    result = _docs({"ars.yaml": _runner_set("x", template)})
    [warning] = result.warnings
    assert warning.path == "spec.template.spec"
    assert "convert the values file" in warning.message


def test_listener_resources_that_differ_within_a_team_are_a_warning() -> None:
    def listener(cpu: str) -> dict[str, Any]:
        return {
            "spec": {"containers": [{"name": "listener", "resources": {"limits": {"cpu": cpu}}}]}
        }

    result = _docs({
        "a.yaml": _runner_set("a", {}, listenerTemplate=listener("1")),
        "b.yaml": _runner_set("b", {}, listenerTemplate=listener("2")),
    })  # fmt: skip
    assert _paths(result) == {("b.yaml", "spec.listenerTemplate.spec.containers[0].resources")}
    assert _one(result, c.TEAM_LISTENER_KIND, "ci")["spec"]["resources"] == {"limits": {"cpu": "1"}}


def test_a_deployment_selector_is_a_note_not_a_loss() -> None:
    rs = {"organization": "acme", "dockerEnabled": False,
          "githubAPICredentialsFrom": {"secretRef": {"name": "s"}}}  # fmt: skip
    rd = {
        "apiVersion": "actions.summerwind.dev/v1alpha1", "kind": "RunnerDeployment",
        "metadata": {"name": "r"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"a": "b"}},
                 "template": {"spec": rs}},
    }  # fmt: skip
    result = _docs({"rd.yaml": rd})
    assert result.lossless
    assert [n.path for n in result.notes] == ["spec.selector"]
    spec = _one(result, c.RUNNER_SCALE_SET_KIND, "r")["spec"]
    assert (spec["minRunners"], spec["maxRunners"]) == (3, 3)
