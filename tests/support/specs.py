"""Generated RunnerScaleSet, TeamListener and RunnerNodePool specs (issue 12, scenario 6).

Each generated spec is a plausible object with at most one fault drawn from a catalogue: a
wrong type, an out-of-range number, minRunners > maxRunners, an unknown pool, a missing
Secret, a bad configUrl, a huge string, an unknown field, a bad label list, an odd duration...
Every fault names the field it breaks (as the apiserver spells a field path,
`spec.github.configUrl`) and what the apiserver should do with it:

- REFUSE: the CRD's schema or a CEL rule rejects it (422/400), and the message must name the
  field;
- ACCEPT: the schema admits it (a Secret or pool that does not exist, an unreachable host);
  the operator must then report it with a condition and not hot-loop;
- EITHER: both are fine (e.g. an integer beyond int64, which the apiserver may refuse or
  store), as long as a refusal names the field.

`draw_specs(context, n, seed)` draws n specs reproducibly: a synchronous hypothesis test
(`@given`, no shrinking, no example database, the seed fixed with `hypothesis.seed`) only
*collects* what it draws; the caller (an async e2e test with its cluster fixture) then
creates them. So the expensive fixture stays outside the property and pytest-asyncio never
meets hypothesis's own runner; the price is no shrinking, which a batch of specs against a
live cluster could not use anyway (a failing spec is printed whole, with the seed).

Layer: tests/support. Pure: no I/O.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from runnerfleet import conventions as c

REFUSE, ACCEPT, EITHER = "refuse", "accept", "either"
RSS, TL, POOL = c.RUNNER_SCALE_SET_KIND, c.TEAM_LISTENER_KIND, c.RUNNER_NODE_POOL_KIND
POOL_NODE_LABEL: Final = "runnerfleet.dev/generated-pool"  # no node carries it
NAME: Final = "NAME"  # the placeholder `named` replaces (names are given after drawing)


@dataclass(frozen=True)
class Context:
    """What a plausible spec points at: the fake GitHub and the fleet's Secret."""

    config_url: str
    secret: str = "github-app"


@dataclass(frozen=True)
class GenSpec:
    kind: str
    body: dict[str, Any]
    fault: str  # "none" or the catalogue's name for the fault
    field: str | None  # the field path the fault breaks, as the apiserver names it
    expect: str  # REFUSE, ACCEPT or EITHER

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])


Draw = Callable[[st.SearchStrategy[Any]], Any]
# A fault: (name, field path, expectation, apply(draw, spec dict) -> None). The field path may
# be completed by apply (e.g. which duration field), so apply returns it when it does.
Apply = Callable[[Draw, dict[str, Any]], str | None]

_LABEL = st.sampled_from(["self-hosted", "linux", "x64", "arm64", "gpu", "docker", "large"])
_DURATIONS_OK = st.sampled_from(["90s", "5m", "1h30m", "10m", "2h"])  # all >= maxRunnerAge's 1m
_DURATIONS_ODD_VALID = st.sampled_from(["0s", "1ms", "0.5s", "250ms", "1h1m1s", "100000h", "90m"])
_DURATIONS_BAD = st.sampled_from(["5 minutes", "1d", "-1s", "", "10", "1.s", "s", "PT5M"])
_HUGE = st.integers(300, 20_000).map(lambda n: "x" * n)
_CAMEL = st.text(string.ascii_lowercase, min_size=3, max_size=12).map(lambda s: "zz" + s)
_BAD_URLS = st.sampled_from([
    "github.com/acme", "ftp://github.com/acme", "https://github.com", "https://github.com/a/b/c",
    "not a url", "", "https://github.com/acme?x=1", "https://exa mple.com/acme",
])  # fmt: skip
_UNREACHABLE_URL = "http://127.0.0.1:9/acme"  # the discard port: connection refused at once


def _set(spec: dict[str, Any], path: str, value: Any) -> None:
    """Set `spec.a.b` in a body (the path as the apiserver names it, no list indexes)."""
    keys = path.split(".")
    node = spec
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value


def _fault(path: str, value: st.SearchStrategy[Any]) -> Apply:
    def apply(draw: Draw, spec: dict[str, Any]) -> str | None:
        _set(spec, path, draw(value))
        return None

    return apply


def _drop(path: str) -> Apply:
    def apply(draw: Draw, spec: dict[str, Any]) -> str | None:
        keys = path.split(".")
        node = spec
        for key in keys[:-1]:
            node = node[key]
        node.pop(keys[-1], None)
        return None

    return apply


def _unknown_field(draw: Draw, spec: dict[str, Any]) -> str | None:
    key = draw(_CAMEL)
    spec["spec"][key] = draw(st.one_of(st.integers(), st.text(max_size=20), st.booleans()))
    return f"spec.{key}"


def _name(length: st.SearchStrategy[int]) -> Apply:
    def apply(draw: Draw, spec: dict[str, Any]) -> str | None:
        base = spec["metadata"]["name"]
        spec["metadata"]["name"] = base + "-" + "n" * draw(length)  # longer than allowed
        return None

    return apply


def _bad_name(draw: Draw, spec: dict[str, Any]) -> str | None:
    spec["metadata"]["name"] = spec["metadata"]["name"] + draw(st.sampled_from(["_x", "-", ".."]))
    return None


# ------------------------------------------------------------------ RunnerScaleSet
_RSS_DURATION_FIELDS = ["registrationTimeout", "maxRunnerAge", "keepFailedRunnersFor",
                        "maxJobDuration", "jobCompletionGrace",
                        "scaleDownDelay"]  # fmt: skip


def _rss_duration(
    values: st.SearchStrategy[str], fields: list[str] = _RSS_DURATION_FIELDS
) -> Apply:
    def apply(draw: Draw, spec: dict[str, Any]) -> str | None:
        field = draw(st.sampled_from(fields))
        spec["spec"][field] = draw(values)
        return f"spec.{field}"

    return apply


def _below_minimum(draw: Draw, spec: dict[str, Any]) -> str | None:
    field, values = draw(st.sampled_from([
        ("registrationTimeout", ["0s", "1ms", "250ms", "0.5s"]),
        ("maxRunnerAge", ["0s", "250ms", "30s", "59s"]),
        ("maxJobDuration", ["0s", "1s", "9s"]),
        ("jobCompletionGrace", ["0s", "500ms"]),
    ]))  # fmt: skip
    spec["spec"][field] = draw(st.sampled_from(values))
    return f"spec.{field}"


def _min_above_max(draw: Draw, spec: dict[str, Any]) -> str | None:
    spec["spec"]["maxRunners"] = draw(st.integers(0, 2))
    spec["spec"]["minRunners"] = spec["spec"]["maxRunners"] + draw(st.integers(1, 3))
    return None


def _labels_duplicate(draw: Draw, spec: dict[str, Any]) -> str | None:
    labels = spec["spec"]["labels"]
    spec["spec"]["labels"] = [*labels, draw(st.sampled_from(labels))]
    return None


def _template_garbage(draw: Draw, spec: dict[str, Any]) -> str | None:
    spec["spec"]["minRunners"], spec["spec"]["maxRunners"] = 1, 2  # so a pod is attempted
    spec["spec"]["template"] = draw(st.sampled_from([
        {"spec": {"containers": [{"name": "runner", "resources": {"limits": {"cpu": "lots"}}}]}},
        {"spec": {"containers": [{"name": "runner", "image": ""}], "restartPolicy": "Sometimes"}},
        {"spec": {"volumes": [{"name": "Bad_Name", "emptyDir": {}}]}},
    ]))  # fmt: skip
    return None


RSS_FAULTS: Final[list[tuple[str, str | None, str, Apply]]] = [
    ("none", None, ACCEPT, lambda draw, spec: None),
    ("min-above-max", "spec.minRunners", REFUSE, _min_above_max),
    ("negative-min", "spec.minRunners", REFUSE, _fault("spec.minRunners", st.integers(-9, -1))),
    ("negative-max", "spec.maxRunners", REFUSE, _fault("spec.maxRunners", st.integers(-9, -1))),
    ("max-wrong-type", "spec.maxRunners", REFUSE,
     _fault("spec.maxRunners", st.sampled_from(["ten", True, [3], {"n": 3}]))),
    ("max-float", "spec.maxRunners", REFUSE,
     _fault("spec.maxRunners", st.sampled_from([2.5, 0.1]))),
    ("max-beyond-int64", "spec.maxRunners", EITHER,
     _fault("spec.maxRunners", st.integers(2**63, 2**70))),
    ("max-huge-valid", "spec.maxRunners", ACCEPT,
     _fault("spec.maxRunners", st.integers(10**6, 2**62))),
    ("labels-empty", "spec.labels", REFUSE, _fault("spec.labels", st.just([]))),
    ("labels-not-a-list", "spec.labels", REFUSE,
     _fault("spec.labels", st.sampled_from(["linux", 7, {"a": "b"}]))),
    ("label-empty-item", "spec.labels", REFUSE, _fault("spec.labels", st.just(["linux", ""]))),
    ("label-huge", "spec.labels", REFUSE, _fault("spec.labels", _HUGE.map(lambda s: [s]))),
    ("label-not-a-string", "spec.labels", REFUSE, _fault("spec.labels", st.just(["linux", 5]))),
    ("labels-duplicate", "spec.labels", REFUSE, _labels_duplicate),
    ("labels-too-many", "spec.labels", REFUSE,
     _fault("spec.labels", st.just([f"l{i}" for i in range(101)]))),
    ("config-url-bad", "spec.github.configUrl", REFUSE,
     _fault("spec.github.configUrl", _BAD_URLS)),
    ("config-url-unreachable", "spec.github.configUrl", ACCEPT,
     _fault("spec.github.configUrl", st.just(_UNREACHABLE_URL))),
    ("secret-missing", "spec.github.secretRef", ACCEPT,
     _fault("spec.github.secretRef", st.just({"name": "no-such-secret"}))),
    ("secret-name-empty", "spec.github.secretRef.name", REFUSE,
     _fault("spec.github.secretRef", st.just({"name": ""}))),
    ("secret-ref-absent", "spec.github.secretRef", REFUSE, _drop("spec.github.secretRef")),
    ("github-absent", "spec.github", REFUSE, _drop("spec.github")),
    ("protocol-unknown", "spec.github.protocol", REFUSE,
     _fault("spec.github.protocol", st.sampled_from(["grpc", "REST", ""]))),
    ("runner-group-huge", "spec.github.runnerGroup", EITHER,
     _fault("spec.github.runnerGroup", _HUGE)),
    ("duration-bad", "spec.<duration>", REFUSE, _rss_duration(_DURATIONS_BAD)),
    # registrationTimeout >= 1s and maxRunnerAge >= 1m (CEL): shorter ones churned runners.
    ("duration-odd-valid", "spec.<duration>", ACCEPT,
     _rss_duration(_DURATIONS_ODD_VALID, ["keepFailedRunnersFor", "scaleDownDelay"])),
    ("duration-below-minimum", "spec.<duration>", REFUSE, _below_minimum),
    ("node-pool-unknown", "spec.nodePool", ACCEPT,
     _fault("spec.nodePool", st.sampled_from(["no-such-pool", "gpu-pool"]))),
    ("node-pool-huge", "spec.nodePool", EITHER, _fault("spec.nodePool", _HUGE)),
    ("node-pool-invalid-name", "spec.nodePool", EITHER,
     _fault("spec.nodePool", st.sampled_from(["Bad_Pool", "a/b", "..", " "]))),
    ("suspend-wrong-type", "spec.suspend", REFUSE,
     _fault("spec.suspend", st.sampled_from(["yes", 1]))),  # null is pruned, not refused
    ("template-garbage", "spec.template", EITHER, _template_garbage),
    ("unknown-field", "spec.<unknown>", REFUSE, _unknown_field),
    ("name-too-long", "metadata.name", REFUSE, _name(st.integers(40, 58))),
    ("name-invalid", "metadata.name", REFUSE, _bad_name),
]  # fmt: skip


def _rss_base(draw: Draw, ctx: Context, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "github": {"configUrl": ctx.config_url, "secretRef": {"name": ctx.secret},
                   "protocol": draw(st.sampled_from(["rest", "scaleSet"]))},
        "labels": draw(st.lists(_LABEL, min_size=1, max_size=4, unique=True)),
        "minRunners": draw(st.sampled_from([0, 0, 0, 1])),
        "maxRunners": draw(st.integers(1, 5)),
    }  # fmt: skip
    for field in _RSS_DURATION_FIELDS:
        if draw(st.booleans()):
            spec[field] = draw(_DURATIONS_OK)
    metadata = {"name": name, "labels": {c.LABEL_TEAM: "generated"}}
    return {"apiVersion": c.API_VERSION, "kind": RSS, "metadata": metadata, "spec": spec}


# ------------------------------------------------------------------ TeamListener
def _repos_both(draw: Draw, spec: dict[str, Any]) -> str | None:
    spec["spec"]["repositories"] = {"names": ["app"], "all": True}
    return None


_TEAM_BAD = st.sampled_from(["Team-A", "team_a", "-team", "team-", "", "t" * 41, "team a"])

TL_FAULTS: Final[list[tuple[str, str | None, str, Apply]]] = [
    ("none", None, ACCEPT, lambda draw, spec: None),
    ("team-bad", "spec.team", REFUSE, _fault("spec.team", _TEAM_BAD)),
    ("team-absent", "spec.team", REFUSE, _drop("spec.team")),
    ("repositories-both", "spec.repositories", REFUSE, _repos_both),
    ("repositories-neither", "spec.repositories", REFUSE,
     _fault("spec.repositories", st.just({}))),
    ("repository-name-huge", "spec.repositories.names", REFUSE,
     _fault("spec.repositories", _HUGE.map(lambda s: {"names": [s]}))),
    ("webhook-secret-absent", "spec.webhook.secretRef", REFUSE,
     _fault("spec.webhook", st.just({"enabled": True}))),
    ("webhook-secret-missing", "spec.webhook.secretRef", ACCEPT,
     _fault("spec.webhook", st.just({"enabled": True, "secretRef": {"name": "no-such-hook"}}))),
    ("poll-bad", "spec.pollInterval", REFUSE, _fault("spec.pollInterval", _DURATIONS_BAD)),
    ("poll-odd-valid", "spec.pollInterval", ACCEPT,
     _fault("spec.pollInterval", _DURATIONS_ODD_VALID)),
    ("replicas-out-of-range", "spec.replicas", REFUSE,
     _fault("spec.replicas", st.sampled_from([0, 6, -1, 1000]))),
    ("replicas-wrong-type", "spec.replicas", REFUSE,
     _fault("spec.replicas", st.sampled_from(["two", 1.5, False]))),
    ("egress-bad-port", "spec.extraEgress", REFUSE,
     _fault("spec.extraEgress", st.sampled_from([[{"cidr": "10.0.0.0/8", "ports": [0]}],
                                                 [{"cidr": "10.0.0.0/8", "ports": [70000]}]]))),
    ("egress-bad-cidr", "spec.extraEgress", REFUSE,
     _fault("spec.extraEgress", st.sampled_from([[{"cidr": "not-a-cidr"}],
                                                 [{"cidr": "10.0.0.0/33"}]]))),
    # CIDR-shaped for the CRD's pattern, not a network: the operator's check (InvalidSpec).
    ("egress-cidr-shaped", "spec.extraEgress", ACCEPT,
     _fault("spec.extraEgress", st.sampled_from([[{"cidr": "1:2/64"}], [{"cidr": ":::/8"}]]))),
    ("secret-missing", "spec.github.secretRef", ACCEPT,
     _fault("spec.github.secretRef", st.just({"name": "no-such-secret"}))),
    ("config-url-bad", "spec.github.configUrl", REFUSE,
     _fault("spec.github.configUrl", _BAD_URLS)),
    ("resources-negative", "spec.resources", EITHER,
     _fault("spec.resources", st.just({"requests": {"memory": -1}}))),
    ("resources-unparseable", "spec.resources", EITHER,
     _fault("spec.resources", st.just({"limits": {"cpu": "lots"}}))),
    ("selector-not-strings", "spec.scaleSetSelector.matchLabels", REFUSE,
     _fault("spec.scaleSetSelector", st.just({"matchLabels": {"a": 5}}))),
    ("unknown-field", "spec.<unknown>", REFUSE, _unknown_field),
    ("name-too-long", "metadata.name", REFUSE, _name(st.integers(40, 58))),
]  # fmt: skip


def _tl_base(draw: Draw, ctx: Context, name: str) -> dict[str, Any]:
    team = draw(st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True))
    spec: dict[str, Any] = {
        "team": team,
        "github": {"configUrl": ctx.config_url, "secretRef": {"name": ctx.secret}},
        "repositories": draw(st.sampled_from([{"names": ["app"]}, {"all": True},
                                              {"all": True, "nameFilter": "svc-*"}])),
        "scaleSetSelector": {"matchLabels": {c.LABEL_TEAM: f"gen-{team}"}},
        "pollInterval": draw(st.sampled_from(["15s", "30s", "1m"])),
        "replicas": 1,
        # Suspended (no listener process) unless drawn otherwise: a running listener is a
        # process on this 2-core machine; a few are enough to exercise that path.
        "suspend": draw(st.sampled_from([True, True, True, False])),
    }  # fmt: skip
    return {"apiVersion": c.API_VERSION, "kind": TL, "metadata": {"name": name}, "spec": spec}


# ------------------------------------------------------------------ RunnerNodePool
POOL_FAULTS: Final[list[tuple[str, str | None, str, Apply]]] = [
    ("none", None, ACCEPT, lambda draw, spec: None),
    ("weight-out-of-range", "spec.weight", REFUSE,
     _fault("spec.weight", st.sampled_from([0, 101, -5]))),
    ("capacity-unknown", "spec.capacityTypes", REFUSE,
     _fault("spec.capacityTypes", st.just(["cheap"]))),
    ("capacity-empty", "spec.capacityTypes", REFUSE, _fault("spec.capacityTypes", st.just([]))),
    ("limit-not-a-quantity", "spec.limits", REFUSE,
     _fault("spec.limits", st.sampled_from([{"cpu": "lots"}, {"memory": "-1Gi"}]))),
    ("requirement-bad-operator", "spec.requirements", REFUSE,
     _fault("spec.requirements", st.just([{"key": "zone", "operator": "Near"}]))),
    ("requirement-in-without-values", "spec.requirements", REFUSE,
     _fault("spec.requirements", st.just([{"key": "zone", "operator": "In"}]))),
    ("expire-bad", "spec.expireAfter", REFUSE,
     _fault("spec.expireAfter", st.sampled_from(["forever", "1d", ""]))),
    ("budget-bad", "spec.disruption.budgets", REFUSE,
     _fault("spec.disruption", st.just({"budgets": [{"nodes": "150%"}]}))),
    ("warm-too-many", "spec.warmCapacity.replicas", REFUSE,
     _fault("spec.warmCapacity", st.just({"replicas": 1001}))),
    ("static-selector-empty", "spec.static.nodeSelector", REFUSE,
     _fault("spec.static", st.just({"nodeSelector": {}}))),
    ("static-absent", "spec.static", ACCEPT, _drop("spec.static")),
    ("team-huge", "spec.teams", EITHER, _fault("spec.teams", _HUGE.map(lambda s: [s]))),
    ("unknown-field", "spec.<unknown>", REFUSE, _unknown_field),
    ("name-too-long", "metadata.name", REFUSE, _name(st.integers(50, 58))),
]  # fmt: skip


def _pool_base(draw: Draw, ctx: Context, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "teams": draw(st.sampled_from([[], ["generated"], ["team-a", "team-b"]])),
        "static": {"nodeSelector": {POOL_NODE_LABEL: "none"}},
    }
    if draw(st.booleans()):
        spec["weight"] = draw(st.integers(1, 100))
    return {"apiVersion": c.API_VERSION, "kind": POOL, "metadata": {"name": name}, "spec": spec}


KINDS: Final = {
    RSS: (_rss_base, RSS_FAULTS),
    TL: (_tl_base, TL_FAULTS),
    POOL: (_pool_base, POOL_FAULTS),
}


@st.composite
def gen_spec(draw: Draw, ctx: Context) -> GenSpec:
    """One spec of a drawn kind, named NAME (`named` gives it its name): a fault from its
    kind's catalogue, or (about 1 in 6) a plausible spec."""
    kind = draw(st.sampled_from(sorted(KINDS)))
    base, faults = KINDS[kind]
    body = base(draw, ctx, NAME)
    # "none" takes a third of the choices; hypothesis draws indexes unevenly (and booleans
    # too): measured, 1 in 6 specs is plausible and all but 3 of 60 faults appear in 1,000.
    choices = faults[1:] + [faults[0]] * (len(faults) // 2)
    fault, field, expect, apply = draw(st.sampled_from(choices))
    where = apply(draw, body)
    return GenSpec(kind, body, fault, where or field, expect)


def named(spec: GenSpec, name: str) -> GenSpec:
    """The spec with NAME replaced by `name` (a name fault keeps its suffix)."""
    body = {**spec.body, "metadata": {**spec.body["metadata"]}}
    body["metadata"]["name"] = str(body["metadata"]["name"]).replace(NAME, name)
    return GenSpec(spec.kind, body, spec.fault, spec.field, spec.expect)


def draw_specs(ctx: Context, count: int, seed: int, prefix: str = "g") -> list[GenSpec]:
    """`count` specs, the same ones for the same seed, named `<prefix><i>`.

    Hypothesis runs a synchronous property that only collects its examples (one spec each;
    the generate phase only, no example database, the seed fixed): reproducible, and the
    async cluster work stays outside hypothesis."""
    drawn: list[GenSpec] = []
    attempt = 0
    while len(drawn) < count:  # hypothesis may stop short of max_examples; draw on

        @hypothesis_seed(seed + attempt)
        @settings(
            max_examples=count - len(drawn), database=None, phases=[Phase.generate],
            deadline=None, suppress_health_check=list(HealthCheck),
        )  # fmt: skip
        @given(gen_spec(ctx))
        def collect(spec: GenSpec) -> None:
            drawn.append(spec)

        collect()
        attempt += 1
    return [named(spec, f"{prefix}{i}") for i, spec in enumerate(drawn[:count])]
