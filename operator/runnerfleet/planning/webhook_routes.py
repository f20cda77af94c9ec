"""Where the installation-level webhook relay sends a `workflow_job` delivery.

One organisation (or GitHub App) webhook reaches the relay (`runnerfleet webhook-relay`,
relay/main.py). Each valid delivery goes to every TeamListener that has webhooks enabled, is
on the delivery's organisation (and GitHub host) and watches the delivery's repository,
addressed to the listener's **acting replica**: the holder of its Lease `<tl>-listener`,
whose identity is `pod@ip:port`. A watching team without a holder is skipped and counted
(its polls still find the job).

The repository selection is the listener's own (`repository_watched`, which
services/listener.py's `_refresh_repositories` + `on_workflow_job` agree with; a unit test
holds the two together), so the relay forwards exactly what the listener would accept.

Layer: planning. Pure: TeamListener bodies and Lease holders in, forwards out; no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from runnerfleet import conventions as c
from runnerfleet.models.github import GitHubTarget, InvalidGitHubConfigError, parse_config_url
from runnerfleet.models.team_listener import Repositories, TeamListenerSpec
from runnerfleet.planning.repositories import (
    installation_repository_watched,
    listed_repositories,
)

# The key of the team's webhook Secret the listener reads (builders/listener.py maps it into
# RUNNERFLEET_WEBHOOK_SECRET); the relay signs with the same value.
WEBHOOK_SECRET_KEY = c.SECRET_KEY_WEBHOOK

SKIP_NO_HOLDER = "no_holder"  # no replica holds the Lease (starting, suspended, crashed)
SKIP_INVALID = "invalid_spec"  # a body the CRD should have refused (configUrl, fields)


@dataclass(frozen=True)
class Delivery:
    """What routing reads of a delivery: its repository, and where GitHub says it lives."""

    repository: str  # "owner/name", as GitHub spells it
    archived: bool = False
    api_base: str | None = None  # from `repository.html_url`, when the payload has it

    @property
    def owner(self) -> str:
        return self.repository.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.repository.split("/", 1)[1]


def delivery_of(payload: Mapping[str, Any]) -> Delivery | None:
    """The routing view of a webhook payload; None without a repository `owner/name`."""
    repo = payload.get("repository")
    if not isinstance(repo, Mapping):
        return None
    full = str(repo.get("full_name") or "")
    owner, _, name = full.partition("/")
    if not owner or not name:
        return None
    return Delivery(full, bool(repo.get("archived")), _api_base(repo.get("html_url"), owner))


def _api_base(html_url: object, owner: str) -> str | None:
    """The API base of the GitHub the repository lives on (github.com, GHES, ghe.com), read
    the way a configUrl is, so a same-named organisation on another host never matches."""
    if not isinstance(html_url, str) or not html_url:
        return None
    parts = urlsplit(html_url)
    try:
        return parse_config_url(f"{parts.scheme}://{parts.netloc}/{owner}").api_base
    except InvalidGitHubConfigError:
        return None


def repository_watched(
    target: GitHubTarget, selection: Repositories, repository: str, archived: bool = False
) -> bool:
    """Whether a listener on `target` with `selection` counts jobs of `repository`.

    The listener's rules (services/listener.py `_refresh_repositories`): a repository-scoped
    configUrl watches that repository; `names` are `repo` (in the configUrl's owner) or
    `owner/repo`, compared exactly; `all` is every repository of the installation that is not
    archived and whose name matches `nameFilter` (a glob, default `*`)."""
    listed = listed_repositories(target, selection)
    if listed is not None:
        return repository in listed
    _, _, name = repository.partition("/")
    return installation_repository_watched(selection, name, archived)


@dataclass(frozen=True)
class Forward:
    """Send the delivery to one team's acting listener, signed with the team's secret."""

    namespace: str
    team_listener: str
    address: str  # `ip:port` of the acting replica's webhook server
    secret_name: str  # the team's webhook Secret (key WEBHOOK_SECRET_KEY), same namespace


@dataclass(frozen=True)
class Skipped:
    """A team that watches the repository but cannot be sent the delivery now."""

    namespace: str
    team_listener: str
    reason: str  # SKIP_NO_HOLDER | SKIP_INVALID


@dataclass(frozen=True)
class Routes:
    forwards: tuple[Forward, ...] = ()
    skipped: tuple[Skipped, ...] = ()


def holder_address(identity: str | None) -> str | None:
    """`ip:port` from a listener Lease's holder identity `pod@ip:port`; None if unheld."""
    if not identity or "@" not in identity:
        return None
    return identity.rpartition("@")[2] or None


def route(
    delivery: Delivery,
    team_listeners: Iterable[Mapping[str, Any]],
    holders: Mapping[tuple[str, str], str | None],
) -> Routes:
    """The forwards for `delivery`, sorted by (namespace, name).

    `holders` maps (namespace, TeamListener name) to its Lease's holder identity. A
    TeamListener with webhooks off, suspended, on another organisation or host, enterprise-
    scoped (no organisation to match), or not watching the repository gets nothing, and is
    not counted: it is simply not addressed by this delivery."""
    forwards: list[Forward] = []
    skipped: list[Skipped] = []
    for body in sorted(team_listeners, key=_key):
        namespace, name = _key(body)
        try:
            spec = TeamListenerSpec.model_validate(body.get("spec") or {})
            target = parse_config_url(spec.github.config_url)
        except (ValidationError, InvalidGitHubConfigError):
            if _elsewhere(delivery, body):
                continue  # another organisation's or host's: this delivery was never theirs
            skipped.append(Skipped(namespace, name, SKIP_INVALID))
            continue
        if not _addressed(delivery, spec, target):
            continue
        assert spec.webhook.secret_ref is not None  # _addressed checked it
        address = holder_address(holders.get((namespace, name)))
        if address is None:
            skipped.append(Skipped(namespace, name, SKIP_NO_HOLDER))
            continue
        forwards.append(Forward(namespace, name, address, spec.webhook.secret_ref.name))
    return Routes(tuple(forwards), tuple(skipped))


def _key(body: Mapping[str, Any]) -> tuple[str, str]:
    meta = body.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _elsewhere(delivery: Delivery, body: Mapping[str, Any]) -> bool:
    """An invalid TeamListener whose `configUrl` alone still says it is on another
    organisation or host: not counted as skipped (a delivery for acme is no business of a
    broken listener of another org, in any namespace)."""
    url = ((body.get("spec") or {}).get("github") or {}).get("configUrl")
    try:
        target = parse_config_url(str(url))
    except InvalidGitHubConfigError:
        return False  # cannot tell whom it watches: counted
    return _other_host(delivery, target) or (
        target.scope != "enterprise" and _other_owner(delivery, target)
    )


def _other_host(delivery: Delivery, target: GitHubTarget) -> bool:
    return delivery.api_base is not None and delivery.api_base != target.api_base


def _other_owner(delivery: Delivery, target: GitHubTarget) -> bool:
    # GitHub logins are case-insensitive; the repository selection compares as the listener
    # does (exactly), so the relay never sends what the listener would ignore.
    return target.owner.lower() != delivery.owner.lower()


def _addressed(delivery: Delivery, spec: TeamListenerSpec, target: GitHubTarget) -> bool:
    if not spec.webhook.enabled or spec.webhook.secret_ref is None or spec.suspend:
        return False
    if target.scope == "enterprise":
        return False  # an enterprise URL names no organisation a delivery could match
    if _other_host(delivery, target) or _other_owner(delivery, target):
        return False
    return repository_watched(target, spec.repositories, delivery.repository, delivery.archived)
