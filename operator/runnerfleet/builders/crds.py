"""Generate CustomResourceDefinitions from the pydantic models (the models are the source).

Pydantic's JSON Schema is turned into a Kubernetes *structural* schema: `$ref`s inlined,
`anyOf [X, null]` collapsed to X, titles dropped, free-form objects marked
`x-kubernetes-preserve-unknown-fields`. CEL rules and printer columns are declared here, next
to the kind they belong to, so `kubectl apply` users get the same 422s as Helm users.

Layer: builders. Pure: same models in, same manifests out.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import BaseModel

from runnerfleet import conventions as c
from runnerfleet.models.node_pool import RunnerNodePoolSpec, RunnerNodePoolStatus
from runnerfleet.models.runner_scale_set import RunnerScaleSetSpec, RunnerScaleSetStatus
from runnerfleet.models.team_listener import TeamListenerSpec, TeamListenerStatus

_DROP = {"title", "x-runnerfleet-duration"}


@dataclass(frozen=True)
class KindSpec:
    """Everything about one kind's CRD that the models do not carry."""

    kind: str
    plural: str
    singular: str
    short_names: list[str]
    spec_model: type[BaseModel]
    status_model: type[BaseModel]
    spec_rules: list[dict[str, str]] = field(default_factory=list)
    root_rules: list[dict[str, str]] = field(default_factory=list)
    printer_columns: list[dict[str, Any]] = field(default_factory=list)
    categories: list[str] = field(default_factory=lambda: ["runnerfleet"])
    scope: str = "Namespaced"


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_inline(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].split("/")[-1]])
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return _inline({**target, **extra}, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        rest = {k: v for k, v in node.items() if k not in ("anyOf", "default")}
        if len(options) == 1:
            merged = {**_inline(options[0], defs), **rest}
            if node.get("default") is not None:
                merged["default"] = node["default"]
            return _inline(merged, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP or key == "$defs":
            continue
        if key == "properties":
            out[key] = {name: _inline(v, defs) for name, v in value.items()}
        elif key == "additionalProperties" and value is False:
            continue
        elif key == "additionalProperties" and value is True:
            out["x-kubernetes-preserve-unknown-fields"] = True
        elif key == "default" and value in ({}, [], None):
            continue
        else:
            out[key] = _inline(value, defs)
    if (
        out.get("type") == "object"
        and "properties" not in out
        and "additionalProperties" not in out
    ):
        out["x-kubernetes-preserve-unknown-fields"] = True
    if "items" in out and isinstance(out["items"], dict) and not out["items"]:
        out["items"] = {"type": "string"}
    return out


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema (camelCase, validation mode) as a structural OpenAPI v3 schema."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema: dict[str, Any] = _inline(raw, defs)
    return schema


def build_crd(kind: KindSpec) -> dict[str, Any]:
    """The CustomResourceDefinition manifest for `kind`."""
    spec_schema = structural_schema(kind.spec_model)
    if kind.spec_rules:
        spec_schema["x-kubernetes-validations"] = kind.spec_rules
    status_schema = structural_schema(kind.status_model)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{kind.plural}.{c.GROUP}",
            "labels": {"app.kubernetes.io/part-of": "runnerfleet"},
        },
        "spec": {
            "group": c.GROUP,
            "scope": kind.scope,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": kind.short_names,
                "categories": kind.categories,
            },
            "versions": [
                {
                    "name": c.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": kind.printer_columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": (kind.spec_model.__doc__ or "").strip(),
                            "required": ["spec"],
                            "x-kubernetes-validations": kind.root_rules,
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def _minimum_duration(field: str, least: str) -> dict[str, str]:
    """A CEL rule: spec.<field>, when set, is at least `least` (Go duration syntax, which
    our duration pattern is a subset of)."""
    return {
        "rule": f"!has(self.{field}) || duration(self.{field}) >= duration('{least}')",
        "message": f"spec.{field} must be at least {least}",
        "fieldPath": f".{field}",
        "reason": "FieldValueInvalid",
    }


def _name_length_rule(why: str) -> dict[str, str]:
    limit = c.MAX_SCALE_SET_NAME
    return {
        "rule": f"self.metadata.name.size() <= {limit}",
        "message": f"metadata.name must be at most {limit} characters ({why})",
        "reason": "FieldValueInvalid",
    }


def _int_column(name: str, path: str, description: str) -> dict[str, Any]:
    return {"name": name, "type": "integer", "jsonPath": path, "description": description}


RUNNER_SCALE_SET = KindSpec(
    kind=c.RUNNER_SCALE_SET_KIND,
    plural=c.RUNNER_SCALE_SET_PLURAL,
    singular="runnerscaleset",
    short_names=["rss"],
    spec_model=RunnerScaleSetSpec,
    status_model=RunnerScaleSetStatus,
    spec_rules=[
        {
            "rule": "self.minRunners <= self.maxRunners",
            "message": "spec.minRunners must be less than or equal to spec.maxRunners",
            "fieldPath": ".minRunners",
            "reason": "FieldValueInvalid",
        },
        # Shorter ones replace every runner before it can start (a pod every ~2 s, found by
        # issue 12's generated specs): refused, naming the field, rather than churned.
        _minimum_duration("registrationTimeout", "1s"),
        _minimum_duration("maxRunnerAge", "1m"),
        # Shorter ones end jobs as they start; 10s still lets a test see a job reaped.
        _minimum_duration("maxJobDuration", "10s"),
        _minimum_duration("jobCompletionGrace", "1s"),
    ],
    root_rules=[_name_length_rule("runner names and labels derive from it")],
    printer_columns=[
        _int_column("Desired", ".status.desired", "Runners wanted now"),
        _int_column("Idle", ".status.idle", "Online runners without a job"),
        _int_column("Busy", ".status.busy", "Runners running a job"),
        _int_column("Pending", ".status.pending", "Runners not yet online"),
        _int_column("Failed", ".status.failed", "Recently failed runners"),
        _int_column("Updated", ".status.updated", "Runners on the current template"),
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ],
)

TEAM_LISTENER = KindSpec(
    kind=c.TEAM_LISTENER_KIND,
    plural=c.TEAM_LISTENER_PLURAL,
    singular="teamlistener",
    short_names=["tl"],
    spec_model=TeamListenerSpec,
    status_model=TeamListenerStatus,
    spec_rules=[
        {
            "rule": (
                "self.repositories.all != "
                "(has(self.repositories.names) && size(self.repositories.names) > 0)"
            ),
            "message": "spec.repositories needs either names or all: true (not both)",
            "fieldPath": ".repositories",
            "reason": "FieldValueInvalid",
        },
        {
            "rule": ("!has(self.webhook) || !self.webhook.enabled || has(self.webhook.secretRef)"),
            "message": "spec.webhook.secretRef is required when spec.webhook.enabled is true",
            "fieldPath": ".webhook.secretRef",
            "reason": "FieldValueRequired",
        },
    ],
    root_rules=[_name_length_rule("child object names derive from it")],
    printer_columns=[
        {"name": "Team", "type": "string", "jsonPath": ".spec.team"},
        {"name": "Ready", "type": "boolean", "jsonPath": ".status.listenerReady"},
        _int_column("Queued", ".status.poll.queuedJobs", "Jobs waiting for a runner"),
        _int_column("Running", ".status.poll.runningJobs", "Jobs in progress on a runner"),
        {"name": "Last Poll", "type": "date", "jsonPath": ".status.poll.lastSuccessfulPoll"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ],
)

RUNNER_NODE_POOL = KindSpec(
    kind=c.RUNNER_NODE_POOL_KIND,
    plural=c.RUNNER_NODE_POOL_PLURAL,
    singular="runnernodepool",
    short_names=["rnp"],
    spec_model=RunnerNodePoolSpec,
    status_model=RunnerNodePoolStatus,
    scope="Cluster",
    spec_rules=[
        {
            "rule": "!has(self.requirements) || self.requirements.all(r, "
            "(r.operator in ['Exists', 'DoesNotExist']) == "
            "(!has(r.values) || size(r.values) == 0))",
            "message": "spec.requirements[]: values must be empty for Exists/DoesNotExist and "
            "non-empty for In/NotIn/Gt/Lt",
            "fieldPath": ".requirements",
            "reason": "FieldValueInvalid",
        },
    ],
    root_rules=[
        {
            "rule": "self.metadata.name.size() <= 50",
            "message": "metadata.name must be at most 50 characters (the Karpenter NodePool is "
            "named runnerfleet-<name>, and the name is a label value)",
            "reason": "FieldValueInvalid",
        }
    ],
    printer_columns=[
        {"name": "Mode", "type": "string", "jsonPath": ".status.mode"},
        {"name": "Teams", "type": "string", "jsonPath": ".spec.teams"},
        _int_column("Nodes", ".status.nodes", "Nodes carrying the pool label"),
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": ".status.conditions[?(@.type=='Ready')].status",
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ],
)

ALL_KINDS: tuple[KindSpec, ...] = (RUNNER_SCALE_SET, TEAM_LISTENER, RUNNER_NODE_POOL)


def render_crd_yaml(kind: KindSpec) -> str:
    """The CRD as the YAML file committed under crds/ (stable key order)."""
    header = "# Generated from runnerfleet.models by `make crds`: do not edit by hand.\n"
    return header + yaml.safe_dump(build_crd(kind), sort_keys=False, width=100)
