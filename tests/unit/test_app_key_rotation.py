"""A GitHub App's private key rotated (issue 12, scenario 7), against the fake GitHub over
loopback HTTP (no cluster): the fake accepts JWTs of every key the App has and refuses a
deleted key's, while tokens minted with it stay valid until they expire (as GitHub's docs
say); the gateway and the operator's registration-token source then use the new key at once.
"""

from __future__ import annotations

import time
from typing import Any, cast

import httpx
import jwt
import pytest

from runnerfleet.gateways.github import GitHubAuthError, GitHubGateway
from runnerfleet.models.github import GitHubCredentials, parse_config_url
from runnerfleet.models.team_listener import TeamListenerSpec
from runnerfleet.services.registration_token import TokenCache
from runnerfleet.services.runtime import Runtime
from runnerfleet.sim.github import MAX_APP_KEYS, FakeGitHub
from tests.support.factories import make_team_listener
from tests.support.fleet import app_key


def _jwt(private: str) -> str:
    now = int(time.time()) - 60
    return jwt.encode({"iss": "42", "iat": now, "exp": now + 600}, private, algorithm="RS256")


def _app(private: str) -> GitHubCredentials:
    return GitHubCredentials(app_id="42", installation_id=7, private_key=private)


async def _mint(fake: FakeGitHub, private: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"{fake.url}/api/v3") as http:
        return await http.post(
            "/app/installations/7/access_tokens",
            headers={"Authorization": f"Bearer {_jwt(private)}"},
        )


async def _runners(fake: FakeGitHub, token: str) -> int:
    async with httpx.AsyncClient(base_url=f"{fake.url}/api/v3") as http:
        resp = await http.get("/orgs/acme/actions/runners",
                              headers={"Authorization": f"token {token}"})  # fmt: skip
        return resp.status_code


async def test_fake_accepts_every_app_key_refuses_a_deleted_ones_keeps_its_tokens(
    fake: FakeGitHub,
) -> None:
    fake.orgs.add("acme")
    old, old_public = app_key()
    new, new_public = app_key()
    fake.app_public_key = old_public
    minted = (await _mint(fake, old)).json()["token"]
    assert (await _mint(fake, new)).status_code == 401  # not the App's key yet

    fake.rotate_app_key(new_public)
    assert (await _mint(fake, old)).status_code == 201  # both keys work during a rotation
    assert (await _mint(fake, new)).status_code == 201

    fake.revoke_app_key(old_public)
    refused = await _mint(fake, old)
    assert refused.status_code == 401
    assert refused.json()["message"] == "A JSON web token could not be decoded"
    assert (await _mint(fake, new)).status_code == 201
    assert await _runners(fake, minted) == 200, "a token minted with a deleted key stays valid"
    assert fake.app_jwts == {fake.key_id(old_public): 2, fake.key_id(new_public): 2}

    fake.installation_token_ttl = -1.0  # ... until it expires
    expired = (await _mint(fake, new)).json()["token"]
    assert await _runners(fake, expired) == 401


def test_an_app_has_at_most_25_keys() -> None:
    fake = FakeGitHub(app_public_key="k0")
    for i in range(1, MAX_APP_KEYS):
        fake.rotate_app_key(f"k{i}")
    with pytest.raises(ValueError, match="at most 25"):
        fake.rotate_app_key("one more")
    assert fake.app_public_key == f"k{MAX_APP_KEYS - 1}"


async def test_a_gateway_on_the_new_key_mints_with_it_though_the_old_keys_jwt_is_cached(
    fake: FakeGitHub,
) -> None:
    """githubkit caches an App's JWT by App id for 8 minutes, process-wide: before the fix, a
    gateway made with the rotated key sent the old key's JWT and was refused."""
    fake.orgs.add("acme")
    fake.installation_token_ttl = 30.0  # under githubkit's 1-min margin: every call mints
    old, old_public = app_key()
    new, new_public = app_key()
    fake.app_public_key = old_public
    target = parse_config_url(f"{fake.url}/acme")
    await GitHubGateway(target, _app(old)).sweep_runners()  # caches a JWT signed with `old`
    fake.rotate_app_key(new_public)
    fake.revoke_app_key(old_public)

    await GitHubGateway(target, _app(new)).sweep_runners()
    assert fake.app_jwts[fake.key_id(new_public)] == 1
    with pytest.raises(GitHubAuthError):  # and the old key's gateway is refused, as on GitHub
        await GitHubGateway(target, _app(old)).sweep_runners()


async def test_registration_tokens_use_the_rotated_key_even_through_a_source_made_before(
    fake: FakeGitHub,
) -> None:
    """An Actions-service client keeps the token source it was made with; once a round has
    read the rotated Secret, that source's next fetch must use the new key (before the fix its
    REST gateway kept the old key for the process's life)."""
    fake.orgs.add("acme")
    fake.installation_token_ttl = 30.0
    old, old_public = app_key()
    new, new_public = app_key()
    fake.app_public_key = old_public
    runtime = Runtime(kube=cast(Any, None), registration_tokens=TokenCache(margin=1e9))
    target = parse_config_url(f"{fake.url}/acme")
    source = runtime.registration_token(target, _app(old))  # held by an Actions client
    await source()
    fake.rotate_app_key(new_public)
    runtime.registration_token(target, _app(new))  # a round read the rotated Secret
    fake.revoke_app_key(old_public)

    token, expires_at = await source()
    assert token
    assert expires_at > time.time()
    assert fake.app_jwts[fake.key_id(new_public)] == 1


class _Secrets:
    """The one KubeGateway call the operator's listener-token path makes, over a dict."""

    def __init__(self, data: dict[str, str]) -> None:
        self.data, self.reads = data, 0

    async def read_secret_data(self, namespace: str, name: str) -> dict[str, str]:
        self.reads += 1
        return dict(self.data)


async def test_a_refused_key_makes_the_operator_read_the_secret_again_and_retry_at_once(
    fake: FakeGitHub,
) -> None:
    """The TeamListener token path cached the Secret for 5 minutes: after the Secret got a
    new key and the old one was deleted, every fetch was refused until then. Now a 401 makes
    it read the Secret again and retry in the same call; one 401 in all."""
    fake.orgs.add("acme")
    fake.installation_token_ttl = 30.0
    old, old_public = app_key()
    new, new_public = app_key()
    fake.app_public_key = old_public
    app = {"github_app_id": "42", "github_app_installation_id": "7"}
    secrets = _Secrets({**app, "github_app_private_key": old})
    runtime = Runtime(kube=cast(Any, secrets), registration_tokens=TokenCache(margin=1e9))
    spec = TeamListenerSpec.model_validate(
        make_team_listener(config_url=f"{fake.url}/acme")["spec"]
    )
    await runtime.listener_registration_token("ns", spec)
    fake.rotate_app_key(new_public)
    secrets.data["github_app_private_key"] = new  # the Secret updated
    fake.revoke_app_key(old_public)  # and the old key deleted at once

    token, _ = await runtime.listener_registration_token("ns", spec)
    assert token
    assert secrets.reads == 2, "read again after the refusal, not after the 5-minute cache"
    assert fake.app_jwts[fake.key_id(new_public)] == 1
    refused = sum(n for (_, route, status), n in fake.requests.items()
                  if status == 401 and "/app/" in route)  # fmt: skip
    assert refused == 1
