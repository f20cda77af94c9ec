"""`runnerfleet convert`: ARC configuration in, runnerfleet manifests and warnings out.

Reads three shapes of ARC configuration (already parsed from YAML by the caller):
- `AutoscalingRunnerSet` manifests (actions.github.com/v1alpha1),
- gha-runner-scale-set Helm values files (a mapping with `githubConfigUrl`),
- legacy `RunnerDeployment` + `HorizontalRunnerAutoscaler` (actions.summerwind.dev/v1alpha1),
and returns RunnerScaleSets, one TeamListener per (namespace, team) and RunnerNodePool hints
(from node selectors), each validated through our models. Every source key that has no
equivalent becomes a warning naming it; keys that need nothing from us become notes. Inline
credentials are never copied: the result lists the Secrets to create instead.

Field names and semantics follow ARC's API types and chart values (docs/migrating-from-arc.md).

Layer: planning. Pure: no I/O, no clock, no environment.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import yaml
from pydantic import ValidationError

from runnerfleet import conventions as c
from runnerfleet.models.node_pool import RunnerNodePoolSpec
from runnerfleet.models.runner_scale_set import (
    GITHUB_URL_PATTERN,
    WEEKDAYS,
    RunnerScaleSetSpec,
)
from runnerfleet.models.team_listener import TeamListenerSpec

ARC_GROUP: Final = "actions.github.com"
LEGACY_GROUP: Final = "actions.summerwind.dev"
DEFAULT_GITHUB_URL: Final = "https://github.com"
# ARC's maxRunners unset means "no limit"; ours needs a number. This one is our CRD default.
UNBOUNDED_MAX: Final = 10
_DNS_INVALID = re.compile(r"[^a-z0-9-]+")


@dataclass(frozen=True)
class Finding:
    """A warning (lossy) or note (nothing lost) about one source key."""

    source: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.path}: {self.message}"

    def to_json(self) -> dict[str, str]:
        return {"source": self.source, "path": self.path, "message": self.message}


class ConvertError(ValueError):
    """Bad input: names the file (and document) and the key."""

    def __init__(self, source: str, path: str, message: str) -> None:
        super().__init__(f"{source}: {path}: {message}")
        self.source, self.path = source, path


@dataclass(frozen=True)
class SecretToCreate:
    """A Secret the output refers to but does not contain (credentials are never written)."""

    namespace: str | None
    name: str
    keys: tuple[str, ...]
    source: str

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{where}{self.name} (keys: {', '.join(self.keys)}; from {self.source})"


@dataclass(frozen=True)
class ConvertOptions:
    team: str | None = None
    namespace: str | None = None
    github_url: str = DEFAULT_GITHUB_URL  # legacy RunnerDeployments name only org/repo


@dataclass
class ConvertResult:
    manifests: list[dict[str, Any]]
    warnings: list[Finding]
    notes: list[Finding]
    secrets: list[SecretToCreate]

    @property
    def lossless(self) -> bool:
        return not self.warnings

    def to_json(self) -> dict[str, Any]:
        return {
            "lossless": self.lossless,
            "manifests": self.manifests,
            "warnings": [w.to_json() for w in self.warnings],
            "notes": [n.to_json() for n in self.notes],
            "secretsToCreate": [
                {"namespace": s.namespace, "name": s.name, "keys": list(s.keys), "source": s.source}
                for s in self.secrets
            ],
        }


@dataclass
class _Ctx:
    """Findings of one source document."""

    source: str
    warnings: list[Finding]
    notes: list[Finding]

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(Finding(self.source, path, message))

    def note(self, path: str, message: str) -> None:
        self.notes.append(Finding(self.source, path, message))

    def fail(self, path: str, message: str) -> ConvertError:
        return ConvertError(self.source, path, message)


@dataclass
class _ScaleSet:
    """One scale set on its way out: what every source shape maps onto."""

    ctx: _Ctx
    name: str
    namespace: str | None
    config_url: str
    secret: str
    spec: dict[str, Any]
    meta_labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    listener_resources: dict[str, Any] = field(default_factory=dict)
    repositories: list[str] = field(default_factory=list)
    team: str = ""
    url_path: str = "githubConfigUrl"  # the source key the GitHub URL came from
    resources_path: str = "listenerTemplate"


# --------------------------------------------------------------------------- entry point


def convert(inputs: Sequence[tuple[str, list[Any]]], options: ConvertOptions) -> ConvertResult:
    """(file name, its YAML documents) pairs -> manifests in a stable order and findings."""
    warnings: list[Finding] = []
    notes: list[Finding] = []
    secrets: list[SecretToCreate] = []
    sets: list[_ScaleSet] = []
    legacy: list[tuple[_Ctx, dict[str, Any]]] = []
    for file, docs in inputs:
        real = [(i, d) for i, d in enumerate(docs, 1) if d is not None]
        for index, doc in real:
            source = file if len(real) == 1 else f"{file}#{index}"
            ctx = _Ctx(source, warnings, notes)
            if not isinstance(doc, dict):
                raise ctx.fail("(document)", "not a mapping")
            group = str(doc.get("apiVersion", "")).split("/")[0]
            kind = doc.get("kind")
            if kind == "AutoscalingRunnerSet" and group == ARC_GROUP:
                sets.append(_from_runner_set(ctx, doc, options, secrets))
            elif (
                kind in ("RunnerDeployment", "HorizontalRunnerAutoscaler") and group == LEGACY_GROUP
            ):
                legacy.append((ctx, doc))
            elif kind is None and "githubConfigUrl" in doc:
                sets.append(_from_values(ctx, file, doc, options, secrets))
            elif kind is None:
                raise ctx.fail("githubConfigUrl", "missing: not a gha-runner-scale-set values file")
            else:
                ctx.warn("kind", f"{doc.get('apiVersion')} {kind} is not converted")
    sets += _from_legacy(legacy, options, secrets)
    team = _check_team(options.team)
    for s in sets:
        s.team = team or _dns(s.namespace or "default", 40)
    manifests = _manifests(sets, warnings)
    return ConvertResult(manifests, warnings, notes, sorted(secrets, key=str))


def render_yaml(result: ConvertResult, files: Iterable[str]) -> str:
    """The manifests as one multi-document YAML, with a header naming the Secrets to create."""
    head = [f"# Converted by `runnerfleet convert` from: {', '.join(files)}"]
    if result.secrets:
        head.append("# Secrets to create before applying (credentials are never written here):")
        head += [f"#   {s}" for s in result.secrets]
    if result.warnings:
        head.append(f"# {len(result.warnings)} source keys were not mapped (see stderr).")
    body = [yaml.safe_dump(m, sort_keys=False, default_flow_style=False) for m in result.manifests]
    return "\n".join(head) + "\n" + "".join(f"---\n{doc}" for doc in body)


# --------------------------------------------------------------------------- shared helpers


def _dns(text: str, limit: int) -> str:
    """A DNS label from any name (ARC scale-set names may hold capitals and spaces)."""
    name = _DNS_INVALID.sub("-", text.lower()).strip("-")[:limit].strip("-")
    return name or "runners"


def _check_team(team: str | None) -> str | None:
    if team is None:
        return None
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", team) or len(team) > 40:
        raise ConvertError("--team", "team", f"{team!r} is not a DNS label of at most 40 chars")
    return team


def _mapping(ctx: _Ctx, value: Any, path: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ctx.fail(path, f"expected a mapping, got {type(value).__name__}")
    return value


def _count(ctx: _Ctx, value: Any, path: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ctx.fail(path, f"expected a non-negative integer, got {value!r}")
    return value


def _config_url(ctx: _Ctx, value: Any, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise ctx.fail(path, "required: the GitHub organisation, repository or enterprise URL")
    url = value.rstrip("/")
    if not re.fullmatch(GITHUB_URL_PATTERN, url + "/"):
        raise ctx.fail(path, f"{value!r} is not an organisation, repository or enterprise URL")
    return url


def _labels(values: Iterable[Any]) -> list[str]:
    seen: list[str] = []
    for value in values:
        if isinstance(value, str) and value and value not in seen:
            seen.append(value)
    return seen


def _warn_keys(ctx: _Ctx, prefix: str, mapping: dict[str, Any], reason: str) -> None:
    for key in mapping:
        ctx.warn(f"{prefix}{key}", f"not mapped ({reason})")


def _runner_container(pod_spec: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod_spec.setdefault("containers", [])
    for container in containers:
        if container.get("name") == c.RUNNER_CONTAINER:
            return container
    runner: dict[str, Any] = {"name": c.RUNNER_CONTAINER}
    containers.insert(0, runner)
    return runner


def _move_service_account(ctx: _Ctx, s: _ScaleSet, path: str) -> None:
    """template.spec.serviceAccountName -> spec.identity (runner pods get no token otherwise)."""
    pod_spec = s.spec.get("template", {}).get("spec", {})
    name = pod_spec.pop("serviceAccountName", None)
    pod_spec.pop("serviceAccount", None)  # the deprecated alias of the same field
    if not name:
        return
    if s.spec.get("containerMode", {}).get("type") == "kubernetes":
        ctx.note(path, "dropped: kubernetes mode renders its own ServiceAccount and Role")
        return
    s.spec["identity"] = {"serviceAccountName": name}


# --------------------------------------------------------------------------- ARC scale sets


def _arc_common(ctx: _Ctx, s: _ScaleSet, src: dict[str, Any], prefix: str) -> None:
    """Keys AutoscalingRunnerSet specs and chart values share (same names, same meaning)."""
    group = src.get("runnerGroup")
    if group:
        s.spec["github"]["runnerGroup"] = str(group)
    minimum = _count(ctx, src.get("minRunners"), f"{prefix}minRunners")
    maximum = _count(ctx, src.get("maxRunners"), f"{prefix}maxRunners")
    if minimum is not None:
        s.spec["minRunners"] = minimum
    if maximum is None:
        maximum = max(UNBOUNDED_MAX, minimum or 0)
        ctx.warn(f"{prefix}maxRunners", f"unset means unbounded in ARC; set to {maximum}")
    elif minimum is not None and maximum < minimum:
        raise ctx.fail(f"{prefix}maxRunners", f"{maximum} is below minRunners {minimum}")
    s.spec["maxRunners"] = maximum
    template = copy.deepcopy(_mapping(ctx, src.get("template"), f"{prefix}template"))
    if template:
        s.spec["template"] = template
    _listener_template(ctx, s, src.get("listenerTemplate"), f"{prefix}listenerTemplate")
    for key in ("proxy", "githubServerTLS"):
        value = src.get(key)
        if value:
            _unmapped_tree(ctx, f"{prefix}{key}", value, _WHY[key])


_WHY: Final = {
    "proxy": "runnerfleet has no proxy setting: set HTTP_PROXY/HTTPS_PROXY/NO_PROXY in the "
    "runner template's env and on the operator and listener",
    "githubServerTLS": "no custom CA setting: mount the CA into the runner template and the "
    "operator (docs/migrating-from-arc.md)",
    "listenerMetrics": "the listener exports its own fixed metrics",
    "vaultConfig": "credentials come from a Kubernetes Secret only",
    "keyVault": "credentials come from a Kubernetes Secret only",
    "metadata": "runnerfleet names and labels the objects it creates itself",
}


def _unmapped_tree(ctx: _Ctx, path: str, value: Any, reason: str) -> None:
    """One warning per key one level down (proxy.http, proxy.noProxy), or the key itself."""
    if isinstance(value, dict) and value:
        _warn_keys(ctx, f"{path}.", value, reason)
    else:
        ctx.warn(path, f"not mapped ({reason})")


def _listener_template(ctx: _Ctx, s: _ScaleSet, value: Any, path: str) -> None:
    """Only the listener container's resources have a place (TeamListener.spec.resources)."""
    template = _mapping(ctx, value, path)
    for key in template:
        if key != "spec":
            ctx.warn(f"{path}.{key}", "not mapped (the TeamListener's pod is rendered by us)")
    spec = _mapping(ctx, template.get("spec"), f"{path}.spec")
    for key, item in spec.items():
        if key != "containers":
            ctx.warn(f"{path}.spec.{key}", "not mapped (the TeamListener's pod is rendered by us)")
            continue
        for i, container in enumerate(item or []):
            where = f"{path}.spec.containers[{i}]"
            if not isinstance(container, dict) or container.get("name") != "listener":
                ctx.warn(where, "not mapped (no sidecars in the TeamListener's pod)")
                continue
            for ckey, cvalue in container.items():
                if ckey == "resources":
                    s.listener_resources = copy.deepcopy(cvalue)
                    s.resources_path = f"{where}.resources"
                elif ckey != "name":
                    ctx.warn(
                        f"{where}.{ckey}", "not mapped (the TeamListener takes resources only)"
                    )


def _container_mode(ctx: _Ctx, value: Any, path: str) -> dict[str, Any] | None:
    mode = _mapping(ctx, value, path)
    if not mode:
        return None
    kind = mode.get("type")
    if kind not in ("dind", "kubernetes"):
        raise ctx.fail(f"{path}.type", f"{kind!r}: expected dind or kubernetes")
    out: dict[str, Any] = {"type": kind}
    for key, item in mode.items():
        if key == "kubernetesModeWorkVolumeClaim" and kind == "kubernetes":
            out["workVolumeClaim"] = _work_claim(ctx, item, f"{path}.{key}")
        elif key == "kubernetesModeServiceAccount" and kind == "kubernetes":
            ctx.note(f"{path}.{key}", "dropped: runnerfleet renders the kube-mode ServiceAccount")
        elif key != "type":
            ctx.warn(f"{path}.{key}", "not mapped")
    return out


def _work_claim(ctx: _Ctx, value: Any, path: str) -> dict[str, Any]:
    claim = _mapping(ctx, value, path)
    out: dict[str, Any] = {}
    for key, item in claim.items():
        if key == "storageClassName" and item:
            out["storageClassName"] = item
        elif key == "accessModes" and item:
            out["accessModes"] = list(item)
        elif key == "resources" and isinstance(item, dict):
            storage = (item.get("requests") or {}).get("storage")
            if storage:
                out["size"] = str(storage)
            rest = {k: v for k, v in item.items() if k != "requests"}
            rest_req = {k: v for k, v in (item.get("requests") or {}).items() if k != "storage"}
            if rest or rest_req:
                ctx.warn(f"{path}.resources", "not mapped beyond requests.storage")
        elif item:
            ctx.warn(f"{path}.{key}", "not mapped (the claim takes class, size, access modes)")
    return out


def _credentials(
    ctx: _Ctx, value: Any, path: str, name: str, ns: str | None, secrets: list[SecretToCreate]
) -> str:
    """A Secret name stays; an inline map is never copied: it becomes a Secret to create."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict) and value:
        secret = f"{name}-github-config"
        keys = tuple(sorted(str(k) for k in value))
        secrets.append(SecretToCreate(ns, secret, keys, f"{ctx.source}: {path}"))
        ctx.warn(
            path,
            f"inline credentials not written out; create Secret {secret} with keys "
            f"{', '.join(keys)} (kubectl create secret generic {secret} --from-literal=...)",
        )
        return secret
    raise ctx.fail(path, "required: a Secret name or the credentials map")


_RUNNER_SET_KEYS: Final = frozenset(
    {
        "githubConfigUrl",
        "githubConfigSecret",
        "runnerGroup",
        "runnerScaleSetName",
        "runnerScaleSetLabels",
        "minRunners",
        "maxRunners",
        "template",
        "listenerTemplate",
        "proxy",
        "githubServerTLS",
    }
)


def _from_runner_set(
    ctx: _Ctx, doc: dict[str, Any], options: ConvertOptions, secrets: list[SecretToCreate]
) -> _ScaleSet:
    meta = _mapping(ctx, doc.get("metadata"), "metadata")
    spec = _mapping(ctx, doc.get("spec"), "spec")
    display = str(spec.get("runnerScaleSetName") or meta.get("name") or "")
    if not display:
        raise ctx.fail("metadata.name", "required")
    name = _dns(display, c.MAX_SCALE_SET_NAME)
    ns = options.namespace or meta.get("namespace")
    s = _ScaleSet(
        ctx,
        name,
        ns,
        _config_url(ctx, spec.get("githubConfigUrl"), "spec.githubConfigUrl"),
        _credentials(
            ctx, spec.get("githubConfigSecret"), "spec.githubConfigSecret", name, ns, secrets
        ),
        {"github": {}},
        url_path="spec.githubConfigUrl",
    )
    s.spec["labels"] = _labels([display, *(spec.get("runnerScaleSetLabels") or [])])
    _metadata(ctx, s, meta)
    _arc_common(ctx, s, spec, "spec.")
    for key, value in spec.items():
        if key in _RUNNER_SET_KEYS or not value:
            continue
        reason = _WHY.get(key, _WHY["metadata"] if key.endswith("Metadata") else "unknown key")
        if key == "autoscalingListener":
            reason = _WHY["metadata"]
        ctx.warn(f"spec.{key}", f"not mapped ({reason})")
    _expanded_mode(ctx, s.spec.get("template", {}), "spec.template.spec")
    _move_service_account(ctx, s, "spec.template.spec.serviceAccountName")
    return s


def _expanded_mode(ctx: _Ctx, template: dict[str, Any], path: str) -> None:
    """An AutoscalingRunnerSet rendered by the chart carries its containerMode expanded into
    the template (hook env, dind containers). Copied as is it would run without the hooks'
    ServiceAccount or a privileged pool, so say so; the values file converts cleanly."""
    pod_spec = template.get("spec") or {}
    containers = [*(pod_spec.get("containers") or []), *(pod_spec.get("initContainers") or [])]
    for container in containers:
        if not isinstance(container, dict):
            continue
        env = {e.get("name") for e in container.get("env") or [] if isinstance(e, dict)}
        if "ACTIONS_RUNNER_CONTAINER_HOOKS" in env:
            ctx.warn(
                path,
                "not mapped (kubernetes mode as the chart expanded it: set "
                "spec.containerMode.type kubernetes, or convert the values file)",
            )
            return
        if container.get("name") == "dind":
            ctx.warn(
                path,
                "not mapped (dind mode as the chart expanded it: set "
                "spec.containerMode.type dind, or convert the values file)",
            )
            return


def _metadata(ctx: _Ctx, s: _ScaleSet, meta: dict[str, Any]) -> None:
    """User labels and annotations travel; ARC's and Helm's own are dropped with a note."""
    for attr, key in (("meta_labels", "labels"), ("annotations", "annotations")):
        for k, v in (meta.get(key) or {}).items():
            if any(
                k.startswith(p)
                for p in ("actions.github.com/", "app.kubernetes.io/", "helm.sh/", "meta.helm.sh/")
            ):
                ctx.note(f"metadata.{key}.{k}", "dropped: set by ARC or Helm")
            elif attr == "meta_labels" and k == c.LABEL_TEAM:
                continue
            else:
                getattr(s, attr)[k] = str(v)


_VALUES_KEYS: Final = frozenset(
    {
        "githubConfigUrl",
        "githubConfigSecret",
        "runnerGroup",
        "runnerScaleSetName",
        "scaleSetLabels",
        "minRunners",
        "maxRunners",
        "template",
        "containerMode",
        "listenerTemplate",
        "proxy",
        "githubServerTLS",
        "namespaceOverride",
        "labels",
        "annotations",
    }
)
_VALUES_NOTES: Final = {
    "controllerServiceAccount": "not needed: the operator's RBAC comes with its own chart",
    "fullnameOverride": "not needed: objects are named after the scale set",
}


def _from_values(
    ctx: _Ctx,
    file: str,
    doc: dict[str, Any],
    options: ConvertOptions,
    secrets: list[SecretToCreate],
) -> _ScaleSet:
    stem = file.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    display = str(doc.get("runnerScaleSetName") or stem)
    if not doc.get("runnerScaleSetName"):
        ctx.note("runnerScaleSetName", f"unset (ARC uses the Helm release name); using {stem!r}")
    name = _dns(display, c.MAX_SCALE_SET_NAME)
    ns = options.namespace or doc.get("namespaceOverride") or None
    s = _ScaleSet(
        ctx,
        name,
        ns,
        _config_url(ctx, doc.get("githubConfigUrl"), "githubConfigUrl"),
        _credentials(ctx, doc.get("githubConfigSecret"), "githubConfigSecret", name, ns, secrets),
        {"github": {}},
    )
    s.spec["labels"] = _labels([display, *(doc.get("scaleSetLabels") or [])])
    _metadata(ctx, s, {"labels": doc.get("labels"), "annotations": doc.get("annotations")})
    _arc_common(ctx, s, doc, "")
    mode = _container_mode(ctx, doc.get("containerMode"), "containerMode")
    if mode:
        s.spec["containerMode"] = mode
    for key, value in doc.items():
        if key in _VALUES_KEYS or value in (None, "", {}, []):
            continue
        if key in _VALUES_NOTES:
            ctx.note(key, _VALUES_NOTES[key])
        else:
            reason = _WHY.get(key, _WHY["metadata"] if key == "resourceMeta" else "unknown key")
            ctx.warn(key, f"not mapped ({reason})")
    _move_service_account(ctx, s, "template.spec.serviceAccountName")
    return s


# --------------------------------------------------------------------------- legacy (summerwind)

# RunnerSpec keys that are pod-spec fields of the same name and meaning: copied as they are.
_POD_FIELDS: Final = (
    "volumes",
    "nodeSelector",
    "tolerations",
    "affinity",
    "imagePullSecrets",
    "priorityClassName",
    "runtimeClassName",
    "terminationGracePeriodSeconds",
    "hostAliases",
    "topologySpreadConstraints",
    "initContainers",
    "dnsPolicy",
    "dnsConfig",
    "securityContext",
    "serviceAccountName",
)
# RunnerSpec keys that configure the runner container.
_RUNNER_FIELDS: Final = {
    "image": "image",
    "imagePullPolicy": "imagePullPolicy",
    "env": "env",
    "envFrom": "envFrom",
    "resources": "resources",
    "volumeMounts": "volumeMounts",
    "containerSecurityContext": "securityContext",
    "lifecycle": "lifecycle",
}
_DOCKER_KEYS: Final = (
    "dockerMTU",
    "dockerRegistryMirror",
    "dockerVarRunVolumeSizeLimit",
    "dockerdContainerResources",
    "dockerVolumeMounts",
    "dockerEnv",
)
_LEGACY_WHY: Final = {
    "workDir": "the work directory is /home/runner/_work",
    "volumeSizeLimit": "set an emptyDir sizeLimit on the template's `work` volume",
    "automountServiceAccountToken": "runner pods get no token; see spec.identity",
}
_HANDLED: Final = frozenset(
    {
        *_POD_FIELDS,
        *_RUNNER_FIELDS,
        "enterprise",
        "organization",
        "repository",
        "labels",
        "group",
        "ephemeral",
        "dockerEnabled",
        "dockerdWithinRunnerContainer",
        "containerMode",
        "workVolumeClaimTemplate",
        "githubAPICredentialsFrom",
        "containers",
    }
)


def _from_legacy(
    docs: list[tuple[_Ctx, dict[str, Any]]],
    options: ConvertOptions,
    secrets: list[SecretToCreate],
) -> list[_ScaleSet]:
    """RunnerDeployments, each with the HorizontalRunnerAutoscaler targeting it (if any)."""

    def key(doc: dict[str, Any], name: Any) -> tuple[Any, Any]:
        return ((doc.get("metadata") or {}).get("namespace"), name)

    deployments = {
        key(d, (d.get("metadata") or {}).get("name")): (x, d)
        for x, d in docs
        if d["kind"] == "RunnerDeployment"
    }
    scalers: dict[tuple[Any, Any], tuple[_Ctx, dict[str, Any]]] = {}
    for ctx, doc in docs:
        if doc["kind"] != "HorizontalRunnerAutoscaler":
            continue
        target = (doc.get("spec") or {}).get("scaleTargetRef") or {}
        k = key(doc, target.get("name"))
        if target.get("kind", "RunnerDeployment") != "RunnerDeployment" or k not in deployments:
            ctx.warn(
                "spec.scaleTargetRef",
                f"no RunnerDeployment {target.get('name')!r} in the input; not converted",
            )
            continue
        scalers[k] = (ctx, doc)
    out = []
    for k, (ctx, doc) in deployments.items():
        s = _from_deployment(ctx, doc, options, secrets)
        if k in scalers:
            _apply_scaler(*scalers[k], s, secrets)
        elif s.secret == "":
            _controller_secret(ctx, s, secrets)
        out.append(s)
    return out


def _legacy_url(ctx: _Ctx, rs: dict[str, Any], base: str) -> str:
    scopes = [(k, rs[k]) for k in ("enterprise", "organization", "repository") if rs.get(k)]
    path = "spec.template.spec"
    if len(scopes) != 1:
        raise ctx.fail(path, "exactly one of enterprise, organization, repository is required")
    kind, value = scopes[0]
    prefix = "enterprises/" if kind == "enterprise" else ""
    return _config_url(ctx, f"{base.rstrip('/')}/{prefix}{value}", f"{path}.{kind}")


def _from_deployment(
    ctx: _Ctx, doc: dict[str, Any], options: ConvertOptions, secrets: list[SecretToCreate]
) -> _ScaleSet:
    meta = _mapping(ctx, doc.get("metadata"), "metadata")
    spec = _mapping(ctx, doc.get("spec"), "spec")
    template = _mapping(ctx, spec.get("template"), "spec.template")
    rs = _mapping(ctx, template.get("spec"), "spec.template.spec")
    if not meta.get("name"):
        raise ctx.fail("metadata.name", "required")
    name = _dns(str(meta["name"]), c.MAX_SCALE_SET_NAME)
    creds = ((rs.get("githubAPICredentialsFrom") or {}).get("secretRef") or {}).get("name", "")
    s = _ScaleSet(
        ctx,
        name,
        options.namespace or meta.get("namespace"),
        _legacy_url(ctx, rs, options.github_url),
        str(creds),
        {"github": {}},
        url_path="spec.template.spec",
    )
    # config.sh gave every summerwind runner `self-hosted` (and OS/arch labels GitHub adds).
    s.spec["labels"] = _labels(["self-hosted", *(rs.get("labels") or [])])
    if rs.get("group"):
        s.spec["github"]["runnerGroup"] = str(rs["group"])
    replicas = _count(ctx, spec.get("replicas"), "spec.replicas")
    # A fixed count: N runners always there, i.e. N kept idle and never more than N.
    s.spec["minRunners"] = s.spec["maxRunners"] = 1 if replicas is None else replicas
    _metadata(ctx, s, meta)
    pod: dict[str, Any] = {}
    if template.get("metadata"):
        pod["metadata"] = copy.deepcopy(template["metadata"])
    pod["spec"] = _legacy_pod_spec(ctx, rs)
    s.spec["template"] = pod
    _legacy_modes(ctx, s, rs)
    for k in spec:
        if k == "selector":
            ctx.note("spec.selector", "dropped: runner pods are selected by our own labels")
        elif k not in ("replicas", "template"):
            ctx.warn(f"spec.{k}", "not mapped")
    _move_service_account(ctx, s, "spec.template.spec.serviceAccountName")
    return s


def _legacy_pod_spec(ctx: _Ctx, rs: dict[str, Any]) -> dict[str, Any]:
    path = "spec.template.spec"
    pod_spec: dict[str, Any] = {f: copy.deepcopy(rs[f]) for f in _POD_FIELDS if f in rs}
    runner = _runner_container(pod_spec)
    for src, dst in _RUNNER_FIELDS.items():
        if src in rs:
            runner[dst] = copy.deepcopy(rs[src])
    if "summerwind/actions-runner" in str(runner.get("image", "")):
        ctx.warn(
            f"{path}.image",
            "not mapped (summerwind images start differently; the "
            f"default {c.DEFAULT_RUNNER_IMAGE} is used)",
        )
        del runner["image"]
    for i, container in enumerate(rs.get("containers") or []):
        cname = container.get("name") if isinstance(container, dict) else None
        if cname == c.RUNNER_CONTAINER:
            runner.update(
                {
                    k: copy.deepcopy(v)
                    for k, v in container.items()
                    if k != "image" or "summerwind/" not in str(v)
                }
            )
        elif cname == "docker":
            ctx.warn(
                f"{path}.containers[{i}]",
                "not mapped (the dind sidecar is rendered by "
                "containerMode dind; only its image can be set)",
            )
        else:
            pod_spec["containers"].append(copy.deepcopy(container))
    if rs.get("ephemeral") is False:
        ctx.warn(f"{path}.ephemeral", "not mapped (runnerfleet runners always take one job)")
    for k in _DOCKER_KEYS:
        if k in rs:
            ctx.warn(f"{path}.{k}", "not mapped (containerMode dind takes an image only)")
    for k in rs:
        if k not in _HANDLED and k not in _DOCKER_KEYS:
            reason = _LEGACY_WHY.get(k, "unknown key")
            ctx.warn(f"{path}.{k}", f"not mapped ({reason})")
    return pod_spec


def _legacy_modes(ctx: _Ctx, s: _ScaleSet, rs: dict[str, Any]) -> None:
    """dockerEnabled (default true) and dockerdWithinRunnerContainer mean Docker for jobs: our
    dind sidecar; containerMode kubernetes is the same hooks-based mode."""
    path = "spec.template.spec"
    if rs.get("containerMode") == "kubernetes":
        mode: dict[str, Any] = {"type": "kubernetes"}
        claim = rs.get("workVolumeClaimTemplate") or {}
        if claim:
            mode["workVolumeClaim"] = _work_claim(ctx, claim, f"{path}.workVolumeClaimTemplate")
        s.spec["containerMode"] = mode
        return
    if rs.get("workVolumeClaimTemplate"):
        ctx.warn(f"{path}.workVolumeClaimTemplate", "not mapped outside kubernetes mode")
    if rs.get("dockerdWithinRunnerContainer"):
        s.spec["containerMode"] = {"type": "dind"}
        ctx.note(
            f"{path}.dockerdWithinRunnerContainer",
            "mapped to containerMode dind (a "
            "Docker sidecar instead of dockerd in the runner container; same DOCKER_HOST)",
        )
    elif rs.get("dockerEnabled", True) is not False:
        s.spec["containerMode"] = {"type": "dind"}
        ctx.note(f"{path}.dockerEnabled", "true (the default): mapped to containerMode dind")


def _controller_secret(ctx: _Ctx, s: _ScaleSet, secrets: list[SecretToCreate]) -> None:
    """summerwind's default: the controller-wide Secret, in the controller's namespace."""
    s.secret = "controller-manager"  # noqa: S105 (a Secret's name)
    secrets.append(
        SecretToCreate(
            s.namespace, s.secret, ("github_token",), f"{ctx.source}: githubAPICredentialsFrom"
        )
    )
    ctx.warn(
        "spec.template.spec.githubAPICredentialsFrom",
        "unset: summerwind used the "
        "controller's Secret; copy it into this namespace as Secret controller-manager",
    )


def _apply_scaler(
    ctx: _Ctx, doc: dict[str, Any], s: _ScaleSet, secrets: list[SecretToCreate]
) -> None:
    spec = _mapping(ctx, doc.get("spec"), "spec")
    minimum = _count(ctx, spec.get("minReplicas"), "spec.minReplicas")
    maximum = _count(ctx, spec.get("maxReplicas"), "spec.maxReplicas")
    s.spec["minRunners"] = minimum or 0
    s.spec["maxRunners"] = maximum if maximum is not None else max(UNBOUNDED_MAX, minimum or 0)
    if s.spec["maxRunners"] < s.spec["minRunners"]:
        raise ctx.fail("spec.maxReplicas", f"{maximum} is below minReplicas {minimum}")
    delay = _count(
        ctx,
        spec.get("scaleDownDelaySecondsAfterScaleOut"),
        "spec.scaleDownDelaySecondsAfterScaleOut",
    )
    if delay is not None:
        s.spec["scaleDownDelay"] = f"{delay}s"
    if not s.secret:
        ref = ((spec.get("githubAPICredentialsFrom") or {}).get("secretRef") or {}).get("name")
        if ref:
            s.secret = str(ref)
        else:
            _controller_secret(ctx, s, secrets)
    floors = [
        f
        for i, o in enumerate(spec.get("scheduledOverrides") or [])
        if (f := _floor(ctx, o, f"spec.scheduledOverrides[{i}]", s.spec["minRunners"]))
    ]
    if floors:
        s.spec["scheduledFloors"] = floors
    for i, metric in enumerate(spec.get("metrics") or []):
        _metric(ctx, s, metric, f"spec.metrics[{i}]")
    why = {
        "scaleUpTriggers": "runnerfleet scales on the job queue itself: every queued job gets a "
        "runner; webhooks on the TeamListener only make it faster",
        "capacityReservations": "no capacity reservations",
    }
    for k, reason in why.items():
        for i, _ in enumerate(spec.get(k) or []):
            ctx.warn(f"spec.{k}[{i}]", f"not mapped ({reason})")
    known = {
        "scheduledOverrides",
        "scaleTargetRef",
        "minReplicas",
        "maxReplicas",
        "scaleDownDelaySecondsAfterScaleOut",
        "githubAPICredentialsFrom",
        "metrics",
        *why,
    }
    for k in spec:
        if k not in known:
            ctx.warn(f"spec.{k}", "not mapped (unknown key)")


def _floor(ctx: _Ctx, override: Any, path: str, base: int) -> dict[str, Any] | None:
    """A daily or weekly override shorter than a day that raises minReplicas is a scheduled
    floor: same wall-clock window, in the override's own UTC offset (a fixed-offset zone, as
    ARC used it). Anything else (lowering the minimum, monthly, one-off, longer) is lost."""
    o = _mapping(ctx, override, path)
    rule = (o.get("recurrenceRule") or {}).get("frequency")
    start, end = _instant(o.get("startTime")), _instant(o.get("endTime"))
    minimum = _count(ctx, o.get("minReplicas"), f"{path}.minReplicas")
    why = None
    if rule not in ("Daily", "Weekly"):
        why = f"recurrence {rule or 'none'}: floors repeat daily or weekly"
    elif minimum is None or minimum <= base:
        why = "it lowers the minimum; a floor only raises it"
    elif start is None or end is None or not dt.timedelta(0) < end - start < dt.timedelta(1):
        why = "a floor is one window shorter than a day"
    if why:
        ctx.warn(path, f"not mapped ({why})")
        return None
    if start is None or end is None or minimum is None:  # checked above; narrows the types
        return None
    if (o.get("recurrenceRule") or {}).get("untilTime"):
        ctx.warn(f"{path}.recurrenceRule.untilTime", "not mapped (floors repeat forever)")
    floor: dict[str, Any] = {"name": f"scheduledOverrides-{path.rsplit('[', 1)[1][:-1]}"}
    if rule == "Weekly":
        floor["days"] = [WEEKDAYS[start.weekday()]]  # not strftime: locale-free
    floor |= {
        "start": start.strftime("%H:%M:%S"),
        "end": end.strftime("%H:%M:%S"),
        "timeZone": _fixed_zone(start),
        "minRunners": minimum,
    }
    return floor


def _instant(value: Any) -> dt.datetime | None:
    """An RFC 3339 time (YAML may already have parsed it) with its offset, or None."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value
    return None


def _fixed_zone(moment: dt.datetime) -> str:
    """`Etc/GMT-9` for +09:00 (POSIX signs are inverted); UTC for +00:00."""
    offset = moment.utcoffset() or dt.timedelta(0)
    hours = int(offset.total_seconds() // 3600)
    return "UTC" if hours == 0 else f"Etc/GMT{-hours:+d}"


def _metric(ctx: _Ctx, s: _ScaleSet, metric: Any, path: str) -> None:
    """Queued-and-running runs is what our listener counts; its repositories go to the
    TeamListener. Busy-percentage thresholds have no equivalent (demand is exact)."""
    metric = _mapping(ctx, metric, path)
    if metric.get("type") == "TotalNumberOfQueuedAndInProgressWorkflowRuns":
        s.repositories += [str(r) for r in metric.get("repositoryNames") or []]
        for k in metric:
            if k not in ("type", "repositoryNames"):
                ctx.warn(f"{path}.{k}", "not mapped")
    else:
        ctx.warn(
            f"{path}.type",
            f"{metric.get('type')!r} not mapped (runnerfleet scales on "
            "the exact job queue, not on busy-runner percentages)",
        )


# --------------------------------------------------------------------------- output


def _manifests(sets: list[_ScaleSet], warnings: list[Finding]) -> list[dict[str, Any]]:
    seen: dict[tuple[str | None, str], str] = {}
    for s in sets:
        k = (s.namespace, s.name)
        if k in seen:
            raise s.ctx.fail("name", f"scale set {s.name!r} also comes from {seen[k]}")
        seen[k] = s.ctx.source
    # The first scale set of a (namespace, team) shapes its TeamListener: sort, so the output
    # does not depend on the order of the input files.
    sets = sorted(sets, key=lambda s: (s.namespace or "", s.name))
    pools = _pools(sets)
    listeners = _listeners(sets)
    scale_sets = [_scale_set(s) for s in sets]
    order = sorted(listeners, key=_order) + sorted(scale_sets, key=_order)
    return sorted(pools, key=_order) + order


def _order(manifest: dict[str, Any]) -> tuple[str, str]:
    meta = manifest["metadata"]
    return (meta.get("namespace") or "", meta["name"])


def _validated(ctx: _Ctx, model: Any, spec: dict[str, Any], what: str) -> None:
    try:
        model.model_validate(spec)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ctx.fail(f"{what}.spec.{where}", str(first["msg"])) from None


def _scale_set(s: _ScaleSet) -> dict[str, Any]:
    s.spec["github"] = {
        "configUrl": s.config_url,
        "secretRef": {"name": s.secret},
        **s.spec["github"],
    }
    _validated(s.ctx, RunnerScaleSetSpec, s.spec, c.RUNNER_SCALE_SET_KIND)
    meta: dict[str, Any] = {"name": s.name}
    if s.namespace:
        meta["namespace"] = s.namespace
    meta["labels"] = {**s.meta_labels, c.LABEL_TEAM: s.team}
    if s.annotations:
        meta["annotations"] = s.annotations
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.RUNNER_SCALE_SET_KIND,
        "metadata": meta,
        "spec": s.spec,
    }


def _listeners(sets: list[_ScaleSet]) -> list[dict[str, Any]]:
    """One TeamListener per (namespace, team), from the first of its scale sets; a scale set
    in another organisation or with other credentials cannot share it (a warning)."""
    groups: dict[tuple[str | None, str], list[_ScaleSet]] = {}
    for s in sets:
        groups.setdefault((s.namespace, s.team), []).append(s)
    out = []
    for (ns, team), members in groups.items():
        first = members[0]
        for other in members[1:]:
            if (_owner(other.config_url), other.secret) != (_owner(first.config_url), first.secret):
                other.ctx.warn(
                    other.url_path,
                    f"TeamListener {team} watches "
                    f"{_owner(first.config_url)} with Secret {first.secret}; convert "
                    "this one with another --team",
                )
        repos = _labels(r for m in members for r in _repos(m))
        spec: dict[str, Any] = {
            "team": team,
            "github": {"configUrl": _owner(first.config_url), "secretRef": {"name": first.secret}},
            "repositories": {"names": repos} if repos else {"all": True},
            "scaleSetSelector": {"matchLabels": {c.LABEL_TEAM: team}},
        }
        resources = next((m.listener_resources for m in members if m.listener_resources), None)
        for m in members:
            if m.listener_resources and m.listener_resources != resources:
                m.ctx.warn(
                    m.resources_path,
                    f"not mapped (TeamListener {team} has one "
                    "listener; it takes the first scale set's resources)",
                )
        if resources:
            spec["resources"] = resources
        _validated(first.ctx, TeamListenerSpec, spec, c.TEAM_LISTENER_KIND)
        meta: dict[str, Any] = {"name": team, **({"namespace": ns} if ns else {})}
        out.append(
            {
                "apiVersion": c.API_VERSION,
                "kind": c.TEAM_LISTENER_KIND,
                "metadata": meta,
                "spec": spec,
            }
        )
    return out


def _owner(url: str) -> str:
    """The organisation (or enterprise) URL of a repository URL; others unchanged."""
    head, _, path = url.partition("://")
    host, _, rest = path.partition("/")
    parts = rest.split("/")
    if len(parts) == 2 and parts[0] != "enterprises":
        return f"{head}://{host}/{parts[0]}"
    return url


def _repos(s: _ScaleSet) -> list[str]:
    rest = s.config_url.partition("://")[2].partition("/")[2].split("/")
    if len(rest) == 2 and rest[0] != "enterprises":
        return [rest[1]]
    return s.repositories


def _pools(sets: list[_ScaleSet]) -> list[dict[str, Any]]:
    """A node selector in a runner template becomes a static RunnerNodePool hint (one per
    distinct selector) that the scale set names; the template keeps its selector and
    tolerations, so runners land on the same nodes as before."""
    by_selector: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
    for s in sets:
        selector = (s.spec.get("template", {}).get("spec") or {}).get("nodeSelector") or {}
        if not selector:
            if s.spec.get("containerMode", {}).get("type") == "dind":
                s.ctx.warn(
                    "containerMode",
                    "dind needs a RunnerNodePool with allowPrivileged: "
                    "true; set spec.nodePool to one",
                )
            continue
        k = tuple(sorted((str(a), str(b)) for a, b in selector.items()))
        pool = by_selector.setdefault(
            k,
            {
                "apiVersion": c.API_VERSION,
                "kind": c.RUNNER_NODE_POOL_KIND,
                "metadata": {"name": _dns(f"{s.team}-{s.name}", 63)},
                "spec": {"teams": [], "static": {"nodeSelector": dict(k)}},
            },
        )
        if s.team not in pool["spec"]["teams"]:
            pool["spec"]["teams"].append(s.team)
        if s.spec.get("containerMode", {}).get("type") == "dind":
            pool["spec"]["allowPrivileged"] = True
        s.spec["nodePool"] = pool["metadata"]["name"]
    for pool in by_selector.values():
        pool["spec"]["teams"].sort()
        _validated(sets[0].ctx, RunnerNodePoolSpec, pool["spec"], c.RUNNER_NODE_POOL_KIND)
    return list(by_selector.values())
