"""The chart's operator RBAC covers what the operator grants: Kubernetes lets a subject create
a Role only with permissions it holds itself, so a rule the listener Role gains and the
operator's ClusterRole lacks would fail in a real cluster (the e2e tests run the operator as
cluster-admin and would not notice)."""

from __future__ import annotations

from pathlib import Path

import yaml

from runnerfleet.builders.container_mode import HOOKS_RULES
from runnerfleet.builders.listener import ListenerIdentity, build_role
from runnerfleet.models.team_listener import TeamListenerSpec
from tests.support.factories import make_team_listener

CHART = Path(__file__).resolve().parents[2] / "charts" / "runnerfleet" / "templates"


def _operator_rules() -> set[tuple[str, str, str]]:
    text = (CHART / "rbac-namespaced.yaml").read_text()
    first = text.split("{{- if")[0].replace('{{ include "runnerfleet.fullname" . }}', "x")
    text_rules = "\n".join(line for line in first.splitlines() if "{{" not in line)
    doc = yaml.safe_load(text_rules)
    return {
        (group, resource, verb)
        for rule in doc["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_operator_holds_every_permission_it_grants_a_listener() -> None:
    spec = TeamListenerSpec.model_validate(make_team_listener()["spec"])
    role = build_role(ListenerIdentity("team-a", "ns", "uid", "image"), spec)
    held = _operator_rules()
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted - held == set()


def test_operator_holds_every_permission_it_grants_container_hooks() -> None:
    granted = {
        (group, resource, verb)
        for rule in HOOKS_RULES
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted - _operator_rules() == set()
