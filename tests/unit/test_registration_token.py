"""The shared registration token: when the operator writes a listener's Secret, what the
listener takes from it, the operator's per-installation cache (one fetch at a time, reuse
while > 20 min left) and that the token never shows in logs or reprs."""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

import pytest

from runnerfleet import conventions as c
from runnerfleet.builders.listener import ListenerIdentity, build_registration_secret
from runnerfleet.gateways.github import GitHubUnavailableError
from runnerfleet.gateways.kubernetes import ForbiddenError, NotFoundError
from runnerfleet.models.github import GitHubCredentials, parse_config_url
from runnerfleet.models.team_listener import TeamListenerSpec
from runnerfleet.planning.team_listener import registration_due, shared_token
from runnerfleet.services.registration_token import SharedRegistrationToken, Token, TokenCache
from runnerfleet.services.runtime import Runtime
from runnerfleet.services.team_listener import Memory, share_registration_token
from runnerfleet.sim.github import FakeGitHub
from tests.support.factories import make_team_listener

NOW = 1_000_000.0
SECRET = "s3cr3t-registration-token"
SHARED = "sh4red-registration-token"
OWNER = ListenerIdentity(name="team-a", namespace="ns", uid="u1", image="img")


def _spec(config_url: str = "https://github.com/acme") -> TeamListenerSpec:
    return TeamListenerSpec.model_validate(make_team_listener(config_url=config_url)["spec"])


def _data(token: str = SECRET, expires: float = NOW + 3600) -> dict[str, str]:
    return {c.SECRET_KEY_REGISTRATION_TOKEN: token, c.SECRET_KEY_REGISTRATION_EXPIRES: str(expires)}


# ------------------------------------------------------------------ pure decisions
def test_operator_writes_the_secret_only_when_missing_or_under_20_minutes() -> None:
    assert registration_due(None, NOW) == "missing"
    assert registration_due(NOW + 3600, NOW) is None
    assert registration_due(NOW + 21 * 60, NOW) is None
    assert registration_due(NOW + 19 * 60, NOW) == "expiring"
    assert registration_due(NOW - 1, NOW) == "expiring"
    assert registration_due(None, NOW, retry_at=NOW + 30) is None, "backs off after a failure"
    assert registration_due(None, NOW, retry_at=NOW) == "missing"


def test_listener_takes_the_shared_token_only_with_more_than_2_minutes_left() -> None:
    fresh = shared_token(_data(expires=NOW + 600), NOW)
    assert (fresh.token, fresh.expires_at, fresh.why) == (SECRET, NOW + 600, "")
    assert "does not exist" in shared_token(None, NOW).why
    assert shared_token(_data(expires=NOW + 119), NOW).token is None
    assert "expires in 119 s" in shared_token(_data(expires=NOW + 119), NOW).why
    assert shared_token(_data(token=""), NOW).token is None
    assert shared_token({c.SECRET_KEY_REGISTRATION_TOKEN: SECRET, "expires_at": "x"}, NOW).why
    assert SECRET not in repr(fresh)


def test_registration_secret_is_owned_by_the_listener_with_expiry_annotated() -> None:
    secret = build_registration_secret(OWNER, _spec(), SECRET, NOW + 3600)
    meta = secret["metadata"]
    assert meta["name"] == c.listener_registration_secret_name("team-a") == "team-a-registration"
    assert meta["ownerReferences"][0]["uid"] == "u1"
    assert meta["ownerReferences"][0]["kind"] == c.TEAM_LISTENER_KIND
    assert meta["annotations"][c.ANNOTATION_REGISTRATION_EXPIRES] == "1970-01-12T14:46:40Z"
    assert c.LABEL_SCALE_SET not in meta["labels"], "not a runner child (the sweep ignores it)"
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == _data(expires=int(NOW + 3600))
    assert SECRET not in str(meta)


# ------------------------------------------------------------------ operator cache
class _Fetch:
    """A registration-token fetch the test releases; counts calls."""

    def __init__(self, expires: float = NOW + 3600) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.expires = expires
        self.fail: Exception | None = None

    async def __call__(self) -> Token:
        self.calls += 1
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return f"{SECRET}-{self.calls}", self.expires


async def test_cache_shares_one_fetch_among_concurrent_callers_and_reuses_it() -> None:
    now = [NOW]
    cache = TokenCache(clock=lambda: now[0])
    fetch = _Fetch()
    waiters = [asyncio.create_task(cache.get("acme", fetch)) for _ in range(20)]
    await asyncio.sleep(0)  # let them all reach the fetch in flight (one loop turn, no timing)
    fetch.release.set()
    results = await asyncio.wait_for(asyncio.gather(*waiters), 5)
    assert fetch.calls == 1
    assert set(results) == {(f"{SECRET}-1", NOW + 3600)}
    now[0] = NOW + 39 * 60  # 21 min left: reused
    assert await cache.get("acme", fetch) == (f"{SECRET}-1", NOW + 3600)
    assert fetch.calls == 1
    now[0] = NOW + 41 * 60  # 19 min left: a new one
    assert await cache.get("acme", fetch) == (f"{SECRET}-2", NOW + 3600)
    assert await cache.get("other-org", fetch) == (f"{SECRET}-3", NOW + 3600)
    assert fetch.calls == 3


async def test_cache_remembers_a_failure_briefly_and_a_cancelled_caller_cancels_nothing() -> None:
    now = [NOW]
    cache = TokenCache(clock=lambda: now[0], failure_backoff=30)
    fetch = _Fetch()
    first = asyncio.create_task(cache.get("acme", fetch))
    second = asyncio.create_task(cache.get("acme", fetch))
    await asyncio.sleep(0)
    first.cancel()
    fetch.fail = GitHubUnavailableError("down")
    fetch.release.set()
    with pytest.raises(GitHubUnavailableError):
        await asyncio.wait_for(second, 5)
    with pytest.raises(GitHubUnavailableError):
        await cache.get("acme", fetch)
    assert fetch.calls == 1, "within the backoff a failure is not retried"
    now[0] += 31
    fetch.fail = None
    assert (await cache.get("acme", fetch))[0] == f"{SECRET}-2"


async def test_runtime_fetches_one_token_from_github_for_operator_and_listeners(
    fake: FakeGitHub,
) -> None:
    """Against the fake GitHub: the operator's Actions-service clients and every listener of
    the installation draw one registration-token request between them."""
    token = fake.add_token()
    runtime = Runtime(kube=_Kube({"github-app": {"github_token": token}}))  # type: ignore[arg-type]
    spec = _spec(f"{fake.url}/acme")
    before = sum(n for e, n in fake.counted_by_endpoint.items() if "registration-token" in e)
    got = await asyncio.gather(
        *(runtime.listener_registration_token(f"team-{i}", spec) for i in range(5)),
        runtime.listener_registration_token("team-0", spec),
    )
    target = parse_config_url(spec.github.config_url)
    source = runtime.registration_token(target, GitHubCredentials(token=token))
    assert await source() == got[0]
    assert len(set(got)) == 1
    after = sum(n for e, n in fake.counted_by_endpoint.items() if "registration-token" in e)
    assert after - before == 1
    for transport in runtime._transports.values():
        await transport.close()


# ------------------------------------------------------------------ listener side
class _Kube:
    """The few KubeGateway calls these services make, over a dict of Secrets."""

    def __init__(self, secrets: dict[str, dict[str, str]] | None = None) -> None:
        self.secrets = dict(secrets or {})
        self.applied: list[dict[str, Any]] = []
        self.reads = 0
        self.error: Exception | None = None

    async def read_secret_data(self, namespace: str, name: str) -> dict[str, str]:
        self.reads += 1
        if self.error is not None:
            raise self.error
        if name not in self.secrets:
            raise NotFoundError(f"read Secret {namespace}/{name}: NotFound")
        return dict(self.secrets[name])

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.applied.append(manifest)
        data = manifest["data"]
        self.secrets[manifest["metadata"]["name"]] = {
            k: base64.b64decode(v).decode() for k, v in data.items()
        }
        return manifest


async def test_listener_uses_the_shared_token_else_fetches_its_own_logging_once_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [NOW]
    kube = _Kube()
    own = _Fetch(expires=NOW + 3600)
    own.release.set()
    source = SharedRegistrationToken(kube, "ns", "team-a-registration", own, clock=lambda: now[0])  # type: ignore[arg-type]
    caplog.set_level(logging.INFO, logger="runnerfleet.registration")
    assert await source() == (f"{SECRET}-1", NOW + 3600)  # no Secret yet: its own
    assert await source() == (f"{SECRET}-2", NOW + 3600)
    assert sum("does not exist" in r.getMessage() for r in caplog.records) == 1, "logged once"
    kube.secrets["team-a-registration"] = _data(token=SHARED, expires=NOW + 1800)
    assert await source() == (SHARED, NOW + 1800)
    assert own.calls == 2, "no GitHub request while the shared token is fresh"
    now[0] = NOW + 1800 - 60  # 1 min left: not worth trading
    assert (await source())[0] == f"{SECRET}-3"
    kube.error = ForbiddenError("read Secret ns/team-a-registration: Forbidden")
    assert (await source())[0] == f"{SECRET}-4"
    assert (source.shared, source.fetched) == (1, 4)
    text = "\n".join(r.getMessage() for r in caplog.records) + repr(source)
    assert SECRET not in text
    assert SHARED not in text
    assert "Forbidden" in text
    assert "expires in 60 s" in text


# ------------------------------------------------------------------ operator writes
async def test_operator_writes_the_secret_when_missing_or_expiring_never_per_round(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kube = _Kube()
    memory = Memory()
    handed: list[str] = []
    expiry = [NOW + 3600]

    async def tokens(namespace: str, spec: TeamListenerSpec) -> Token:
        handed.append(namespace)
        return SECRET, expiry[0]

    caplog.set_level(logging.INFO)
    share = share_registration_token
    await share(kube, OWNER, _spec(), memory, tokens, NOW)  # type: ignore[arg-type]
    assert [m["metadata"]["name"] for m in kube.applied] == ["team-a-registration"]
    for minute in range(1, 40):  # rounds for 40 minutes: nothing more
        await share(kube, OWNER, _spec(), memory, tokens, NOW + minute * 60)  # type: ignore[arg-type]
    assert (len(kube.applied), kube.reads) == (1, 1), "read back once, written once"
    expiry[0] = NOW + 7200
    await share(kube, OWNER, _spec(), memory, tokens, NOW + 41 * 60)  # type: ignore[arg-type]
    assert len(kube.applied) == 2
    assert kube.secrets["team-a-registration"][c.SECRET_KEY_REGISTRATION_EXPIRES] == "1007200"

    # After a restart (empty memory) a fresh Secret is adopted, not rewritten.
    restarted = Memory()
    await share(kube, OWNER, _spec(), restarted, tokens, NOW + 42 * 60)  # type: ignore[arg-type]
    assert len(kube.applied) == 2
    assert restarted.registration == NOW + 7200

    # A failure is logged without the token, and retried a minute later, not every round.
    async def broken(namespace: str, spec: TeamListenerSpec) -> Token:
        raise GitHubUnavailableError("registration token: answered 502")

    failing = Memory()
    kube.secrets.clear()
    await share(kube, OWNER, _spec(), failing, broken, NOW)  # type: ignore[arg-type]
    await share(kube, OWNER, _spec(), failing, tokens, NOW + 30)  # type: ignore[arg-type]
    assert len(kube.applied) == 2, "backing off"
    await share(kube, OWNER, _spec(), failing, tokens, NOW + 61)  # type: ignore[arg-type]
    assert len(kube.applied) == 3
    assert any("not written" in r.getMessage() for r in caplog.records)
    assert all(SECRET not in r.getMessage() for r in caplog.records)
