"""Scale-set service paths that need no cluster (gateways substituted by stubs)."""

from __future__ import annotations

from typing import Any

from runnerfleet.services.scale_set import Runtime, ScaleSet, _round


class NoCalls:
    """A gateway stand-in that fails the test if the service touches it."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected gateway call: {name}")


def _body(spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "s", "namespace": "ns", "uid": "u"}, "spec": spec}


async def test_spec_the_model_rejects_becomes_a_condition_naming_the_field() -> None:
    runtime = Runtime(kube=NoCalls())  # type: ignore[arg-type]
    spec = {"github": {"configUrl": "https://github.com/acme", "secretRef": {"name": "g"}},
            "labels": "linux"}  # fmt: skip
    outcome = await _round(runtime, ScaleSet(_body(spec)))
    assert outcome.plan is None
    problem = outcome.problems[0]
    assert (problem.condition, problem.reason) == ("ConfigValid", "InvalidSpec")
    assert problem.message.startswith("spec.labels")


async def test_bad_config_url_never_reaches_a_gateway() -> None:
    runtime = Runtime(kube=NoCalls())  # type: ignore[arg-type]
    url = "https://github.com/enterprises"  # passes the CRD pattern, lacks the slug
    spec = {"github": {"configUrl": url, "secretRef": {"name": "g"}}, "labels": ["l"]}
    outcome = await _round(runtime, ScaleSet(_body(spec)))
    assert outcome.problems[0].reason == "InvalidGitHubConfig"
    assert "spec.github.configUrl" in outcome.problems[0].message


async def test_a_node_pool_name_that_is_no_name_never_reaches_the_apiserver() -> None:
    """`spec.nodePool: a/b` made the pool's GET read another URL, and the round crashed on
    the answer (no `metadata`); found by issue 12's generated specs."""
    from runnerfleet.services.scale_set import _resolve_pool

    runtime = Runtime(kube=NoCalls())  # type: ignore[arg-type]
    for name in ("a/b", "..", " ", "Bad_Pool", "-x"):
        spec = {"github": {"configUrl": "https://github.com/acme", "secretRef": {"name": "g"}},
                "labels": ["l"], "nodePool": name}  # fmt: skip
        scale_set = ScaleSet(_body(spec))
        place, problem = await _resolve_pool(runtime, scale_set.spec, scale_set.identity)
        assert place is None
        assert problem is not None
        assert problem.reason == "NodePoolNotFound"
        assert problem.message.startswith("spec.nodePool")
