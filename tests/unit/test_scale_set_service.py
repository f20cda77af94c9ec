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
