"""Runner Secret and pod builders (pure; golden file for the default pod)."""

from __future__ import annotations

from runnerfleet import conventions as c
from runnerfleet.builders.runner import ScaleSetIdentity, build_runner_pod, build_runner_secret
from tests.support.golden import golden, runner_spec

OWNER = ScaleSetIdentity(name="linux", namespace="team-a", uid="1234")


def test_default_pod_matchesgolden() -> None:
    golden("runner_pod_default.json", build_runner_pod(OWNER, runner_spec(), "linux-abcd12345"))


def test_pod_is_restricted_and_mounts_no_token() -> None:
    pod = build_runner_pod(OWNER, runner_spec(), "linux-abcd12345")
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    runner = spec["containers"][0]
    assert runner["securityContext"]["allowPrivilegeEscalation"] is False
    assert runner["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_jit_config_comes_only_by_secret_reference() -> None:
    pod = build_runner_pod(OWNER, runner_spec(), "linux-abcd12345")
    env = pod["spec"]["containers"][0]["env"]
    assert env == [
        {
            "name": c.JIT_ENV,
            "valueFrom": {"secretKeyRef": {"name": "linux-abcd12345", "key": "jitconfig"}},
        }
    ]


def test_template_values_win_and_sidecars_get_defaults() -> None:
    template = {
        "metadata": {"labels": {"team": "a", c.LABEL_SCALE_SET: "spoofed"}},
        "spec": {
            "containers": [
                {"name": "runner", "image": "acme/runner:1", "env": [{"name": "X", "value": "1"}]},
                {"name": "cache", "image": "acme/cache:1"},
            ],
            "securityContext": {"runAsUser": 2000},
        },
    }
    pod = build_runner_pod(OWNER, runner_spec(template=template), "linux-abcd12345")
    runner, cache = pod["spec"]["containers"]
    assert runner["image"] == "acme/runner:1"
    assert runner["command"] == ["/home/runner/run.sh"]
    assert [e["name"] for e in runner["env"]] == ["X", c.JIT_ENV]
    assert cache["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["spec"]["securityContext"]["runAsUser"] == 2000
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["metadata"]["labels"]["team"] == "a"
    assert pod["metadata"]["labels"][c.LABEL_SCALE_SET] == "linux"  # ours cannot be spoofed


def test_builders_do_not_mutate_therunner_spec() -> None:
    template = {"spec": {"containers": [{"name": "runner"}]}}
    spec = runner_spec(template=template)
    build_runner_pod(OWNER, spec, "linux-abcd12345")
    assert spec.template == template


def test_secret_is_an_owned_intent_record_without_data() -> None:
    secret = build_runner_secret(OWNER, "linux-abcd12345")
    assert "data" not in secret
    assert "stringData" not in secret
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "1234"
    assert secret["metadata"]["labels"][c.LABEL_RUNNER] == "linux-abcd12345"


def test_runner_names_are_owned_by_exactly_one_scale_set() -> None:
    name = c.runner_name("linux", "team-a", 123456789)
    assert name == c.runner_name("linux", "team-a", 123456789)
    assert c.is_runner_of(name, "linux", "team-a")
    assert not c.is_runner_of(name, "linux", "team-b")
    assert not c.is_runner_of(name, "lin", "team-a")
    gpu = c.runner_name("linux-gpu", "team-a", 1)
    assert not c.is_runner_of(gpu, "linux", "team-a")
    assert len(c.runner_name("x" * c.MAX_SCALE_SET_NAME, "ns", 2**40)) <= 63


def test_team_label_is_copied_to_runner_pods() -> None:
    owner = ScaleSetIdentity(name="linux", namespace="team-a", uid="1", team="team-a")
    pod = build_runner_pod(owner, runner_spec(), "linux-abcd12345")
    assert pod["metadata"]["labels"][c.LABEL_TEAM] == "team-a"
