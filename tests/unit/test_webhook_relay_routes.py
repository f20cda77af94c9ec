"""The relay's routing (planning/webhook_routes.py, pure): which TeamListeners a delivery goes
to, at which address; and that its repository selection is the listener's own."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from runnerfleet import conventions as c
from runnerfleet.gateways.github import RepositoryInfo
from runnerfleet.metrics import ListenerMetrics
from runnerfleet.models.github import parse_config_url
from runnerfleet.models.team_listener import Repositories, TeamListenerSpec
from runnerfleet.planning.webhook_routes import (
    SKIP_INVALID,
    SKIP_NO_HOLDER,
    Delivery,
    Forward,
    Skipped,
    delivery_of,
    holder_address,
    repository_watched,
    route,
)
from runnerfleet.services.listener import Listener
from tests.unit.test_listener_demand import StubKube
from tests.unit.test_listener_poll import StubGitHub

APP = Delivery("acme/app", api_base="https://api.github.com")


def tl(
    name: str,
    namespace: str = "ns",
    *,
    org: str = "acme",
    repositories: dict[str, Any] | None = None,
    webhook: bool = True,
    **spec: Any,
) -> dict[str, Any]:
    """A TeamListener body as the watch delivers it."""
    return {
        "apiVersion": c.API_VERSION, "kind": c.TEAM_LISTENER_KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "team": name, "github": {"configUrl": f"https://github.com/{org}",
                                     "secretRef": {"name": "github-app"}},
            "repositories": repositories or {"names": ["app"]},
            "webhook": {"enabled": webhook, "secretRef": {"name": f"{name}-hook"}},
            **spec,
        },
    }  # fmt: skip


def held(*keys: tuple[str, str], port: int = 8080) -> dict[tuple[str, str], str | None]:
    return {key: f"{key[1]}-pod-0@10.0.0.{i}:{port}" for i, key in enumerate(keys, start=1)}


def test_a_delivery_goes_to_each_watching_team_at_its_acting_replica() -> None:
    bodies = [
        tl("team-b", "b"),
        tl("team-a", "a"),
        tl("team-c", "c", repositories={"names": ["lib"]}),
    ]
    routes = route(APP, bodies, held(("a", "team-a"), ("b", "team-b"), ("c", "team-c")))
    assert routes.forwards == (
        Forward("a", "team-a", "10.0.0.1:8080", "team-a-hook"),
        Forward("b", "team-b", "10.0.0.2:8080", "team-b-hook"),
    )
    assert routes.skipped == ()


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (tl("t", org="other"), "another organisation"),
        (tl("t", webhook=False), "webhooks disabled"),
        (tl("t", suspend=True), "suspended (no listener runs)"),
        (tl("t", repositories={"names": ["api"]}), "not in its names"),
        (tl("t", repositories={"names": ["other/app"]}), "names another owner's app"),
        (tl("t", repositories={"all": True, "nameFilter": "svc-*"}), "nameFilter excludes it"),
    ],
)
def test_teams_not_addressed_get_nothing_and_are_not_counted(
    body: dict[str, Any], why: str
) -> None:
    routes = route(APP, [body], held(("ns", "t")))
    assert routes.forwards == (), why
    assert routes.skipped == (), why


def test_names_all_and_name_filter_cover_the_repository() -> None:
    bodies = [
        tl("names", repositories={"names": ["api", "app"]}),
        tl("owner-names", repositories={"names": ["acme/app"]}),
        tl("all", repositories={"all": True}),
        tl("filter", repositories={"all": True, "nameFilter": "a*"}),
    ]
    keys = [("ns", b["metadata"]["name"]) for b in bodies]
    routes = route(APP, bodies, held(*keys))
    assert sorted(f.team_listener for f in routes.forwards) == [
        "all", "filter", "names", "owner-names",
    ]  # fmt: skip


def test_organisation_matches_case_insensitively_but_not_across_hosts() -> None:
    assert route(APP, [tl("t", org="ACME", repositories={"all": True})], held(("ns", "t"))).forwards
    ghes = Delivery("acme/app", api_base="https://ghe.example.com/api/v3")
    assert route(ghes, [tl("t")], held(("ns", "t"))).forwards == ()


def test_no_holder_is_skipped_and_counted() -> None:
    bodies = [tl("a"), tl("b"), tl("c")]
    holders: dict[tuple[str, str], str | None] = {("ns", "b"): None, ("ns", "c"): "pod-without-at"}
    routes = route(APP, bodies, holders)
    assert routes.forwards == ()
    assert routes.skipped == tuple(Skipped("ns", n, SKIP_NO_HOLDER) for n in ("a", "b", "c"))


def test_a_body_the_crd_should_have_refused_is_skipped_and_counted() -> None:
    bad = tl("bad")
    bad["spec"]["github"]["configUrl"] = "ftp://nowhere"
    routes = route(APP, [bad, tl("good")], held(("ns", "bad"), ("ns", "good")))
    assert [f.team_listener for f in routes.forwards] == ["good"]
    assert routes.skipped == (Skipped("ns", "bad", SKIP_INVALID),)


def test_an_invalid_body_of_another_organisation_or_host_is_not_counted() -> None:
    """The relay watches every namespace: one team's broken TeamListener is counted only for
    deliveries its configUrl could have been addressed by."""
    broken = []
    for name, url in (("same-org", "https://github.com/acme"), ("other-org", "https://github.com/zeta"),
                      ("other-host", "https://ghe.example.com/acme")):  # fmt: skip
        body = tl(name)
        body["spec"]["github"]["configUrl"] = url
        body["spec"]["replicas"] = "many"  # fails the model
        broken.append(body)
    routes = route(
        APP,
        [*broken, tl("good")],
        held(*(("ns", b["metadata"]["name"]) for b in broken), ("ns", "good")),
    )
    assert [f.team_listener for f in routes.forwards] == ["good"]
    assert routes.skipped == (Skipped("ns", "same-org", SKIP_INVALID),)


def test_repository_scoped_and_enterprise_listeners() -> None:
    repo = tl("repo")
    repo["spec"]["github"]["configUrl"] = "https://github.com/acme/app"
    other = tl("other-repo")
    other["spec"]["github"]["configUrl"] = "https://github.com/acme/api"
    ent = tl("ent", repositories={"all": True})
    ent["spec"]["github"]["configUrl"] = "https://github.com/enterprises/acme"
    routes = route(
        APP, [repo, other, ent], held(("ns", "repo"), ("ns", "other-repo"), ("ns", "ent"))
    )
    assert [f.team_listener for f in routes.forwards] == ["repo"]


def test_holder_address_from_the_lease_identity() -> None:
    assert holder_address("team-a-listener-7d9-x@10.1.2.3:8080") == "10.1.2.3:8080"
    assert holder_address(None) is None
    assert holder_address("") is None
    assert holder_address("no-address") is None
    assert holder_address("pod@") is None


def test_delivery_of_a_payload() -> None:
    payload = {"repository": {"full_name": "acme/app", "archived": True,
                              "html_url": "https://github.com/acme/app"}}  # fmt: skip
    assert delivery_of(payload) == Delivery("acme/app", True, "https://api.github.com")
    ghes = {"repository": {"full_name": "acme/app", "html_url": "https://ghe.example.com/acme/app"}}
    assert delivery_of(ghes) == Delivery("acme/app", False, "https://ghe.example.com/api/v3")
    assert delivery_of({"repository": {"full_name": "acme/app"}}) == Delivery("acme/app")
    for bad in ({}, {"repository": None}, {"repository": {"full_name": "noslash"}}):
        assert delivery_of(bad) is None


# ---------------------------------------------------------------- the listener's own rules
SELECTIONS = [
    {"names": ["app"]}, {"names": ["acme/app", "api"]}, {"names": ["other/app"]},
    {"names": ["App"]}, {"all": True}, {"all": True, "nameFilter": "a*"},
    {"all": True, "nameFilter": "svc-?"}, {"all": True, "nameFilter": "[!a]*"},
]  # fmt: skip
CANDIDATES = [("app", False), ("app", True), ("api", False), ("svc-1", False), ("App", False)]


@pytest.mark.parametrize(
    ("selection", "candidate"), list(itertools.product(SELECTIONS, CANDIDATES))
)
async def test_relay_forwards_exactly_what_the_listener_accepts(
    selection: dict[str, Any], candidate: tuple[str, bool]
) -> None:
    """`repository_watched` against the listener's own code path: `_refresh_repositories`
    (the installation's repositories, archived ones skipped, `nameFilter`) then
    `on_workflow_job` (is the delivery's repository watched?)."""
    name, archived = candidate
    spec = TeamListenerSpec.model_validate({
        "team": "t", "github": {"configUrl": "https://github.com/acme", "secretRef": {"name": "g"}},
        "repositories": selection,
    })  # fmt: skip
    # Fillers every filter matches one of: a listener that watches nothing yet accepts any
    # delivery (it has not read its repositories), which is not the rule under test.
    fillers = [RepositoryInfo("acme", n, False, None) for n in ("a-filler", "svc-z")]
    installation = [RepositoryInfo("acme", name, archived, None), *fillers]
    target = parse_config_url("https://github.com/acme")
    listener = Listener(
        StubKube([]), StubGitHub(installation), target, "ns", "t", spec,  # type: ignore[arg-type]
        ListenerMetrics.create(),
    )  # fmt: skip
    await listener._refresh_repositories(0.0)
    payload = {"repository": {"full_name": f"acme/{name}", "archived": archived},
               "workflow_job": {"id": 1, "labels": ["linux"], "status": "queued"}}  # fmt: skip
    accepted = listener.on_workflow_job(payload)
    sel = Repositories.model_validate(selection)
    assert repository_watched(target, sel, f"acme/{name}", archived) is accepted
