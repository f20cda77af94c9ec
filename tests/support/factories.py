"""Factories with overrides: `make_scale_set(min_runners=3)` reads as the scenario it sets up."""

from __future__ import annotations

from typing import Any

from runnerfleet import conventions as c


def make_scale_set(
    name: str = "linux",
    *,
    config_url: str = "https://github.com/acme",
    secret: str = "github-app",
    labels: list[str] | None = None,
    min_runners: int = 0,
    max_runners: int = 10,
    team: str | None = None,
    protocol: str = "rest",
    **spec: Any,
) -> dict[str, Any]:
    """REST unless a test asks for the scale-set protocol (the product default): the tests
    built on this factory cover the REST path; tests/e2e/test_scale_set_protocol.py the other."""
    body: dict[str, Any] = {
        "apiVersion": c.API_VERSION,
        "kind": c.RUNNER_SCALE_SET_KIND,
        "metadata": {"name": name, "labels": {c.LABEL_TEAM: team} if team else {}},
        "spec": {
            "github": {
                "configUrl": config_url,
                "secretRef": {"name": secret},
                "protocol": protocol,
            },
            "labels": labels if labels is not None else ["self-hosted", "linux"],
            "minRunners": min_runners,
            "maxRunners": max_runners,
            **spec,
        },
    }
    return body


def make_team_listener(
    name: str = "team-a",
    *,
    team: str = "team-a",
    config_url: str = "https://github.com/acme",
    secret: str = "github-app",
    repositories: list[str] | None = None,
    replicas: int = 1,
    **spec: Any,
) -> dict[str, Any]:
    """One replica unless a test asks for more (the product default is 2, for HA): most
    tests talk to "the" listener process."""
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.TEAM_LISTENER_KIND,
        "metadata": {"name": name},
        "spec": {
            "team": team,
            "github": {"configUrl": config_url, "secretRef": {"name": secret}},
            "repositories": {"names": repositories if repositories is not None else ["app"]},
            "replicas": replicas,
            **spec,
        },
    }


def make_node_pool(name: str, **spec: Any) -> dict[str, Any]:
    """A RunnerNodePool (cluster-scoped); `spec` keys are camelCase as in YAML."""
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.RUNNER_NODE_POOL_KIND,
        "metadata": {"name": name},
        "spec": spec,
    }
