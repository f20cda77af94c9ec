"""The GitHub gateway against the fake GitHub over loopback HTTP (no cluster): token and App
auth, pagination, and every error mapped onto runnerfleet's own exceptions."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from runnerfleet.gateways.github import (
    GitHubAuthError,
    GitHubGateway,
    GitHubUnavailableError,
    RateLimitedError,
    RunnerBusyError,
    RunnerNameTakenError,
)
from runnerfleet.models.github import GitHubCredentials, parse_config_url
from runnerfleet.sim.github import FakeGitHub


def _gateway(fake: FakeGitHub, path: str = "acme", token: str | None = None) -> GitHubGateway:
    target = parse_config_url(f"{fake.url}/{path}")
    return GitHubGateway(target, GitHubCredentials(token=token or fake.add_token()))


async def _names(gh: GitHubGateway) -> list[str]:
    return [r.name for r in (await gh.sweep_runners()).runners]


async def test_register_list_delete_with_token(fake: FakeGitHub) -> None:
    gh = _gateway(fake)
    reg, jit = await gh.create_jit_runner("r-1", ["self-hosted", "linux"], 1)
    assert reg.name == "r-1"
    assert fake.runner_from_jit(jit) is not None
    assert await _names(gh) == ["r-1"]
    assert [r.id for r in await gh.runners_named("r-1")] == [reg.id]
    found = await gh.get_runner(reg.id)
    assert found is not None
    assert (found.name, found.online) == ("r-1", False)
    await gh.delete_runner(reg.id, "r-1")
    await gh.delete_runner(reg.id, "r-1")  # already gone: still fine
    assert await _names(gh) == []
    assert await gh.get_runner(reg.id) is None


async def test_repo_scope_and_pagination(fake: FakeGitHub) -> None:
    gh = _gateway(fake, "acme/app")
    for i in range(130):
        await gh.create_jit_runner(f"r-{i}", ["linux"], 1)
    sweep = await gh.sweep_runners()
    assert len(sweep.runners) == 130
    assert len({r.name for r in sweep.runners}) == 130
    assert (len(sweep.pages), sweep.paid) == (2, 2)
    again = await gh.sweep_runners(sweep.pages)
    assert again.paid == 0, "unchanged pages are answered 304 and cost nothing"
    assert again.runners == sweep.runners
    assert await _names(_gateway(fake, "acme")) == []  # org scope sees none of them


async def test_app_credentials_exchange_a_jwt_for_an_installation_token(fake: FakeGitHub) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    fake.app_public_key = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    creds = GitHubCredentials(app_id="42", installation_id=7, private_key=pem)
    assert pem not in repr(creds)
    gh = GitHubGateway(parse_config_url(f"{fake.url}/acme"), creds)
    await gh.create_jit_runner("r-1", ["linux"], 1)
    await gh.sweep_runners()
    issued = [k for k in fake.requests if k[1].endswith("/access_tokens")]
    assert sum(fake.requests[k] for k in issued) == 1, "the installation token is reused"


async def test_errors_map_to_runnerfleet_exceptions(fake: FakeGitHub) -> None:
    gh = _gateway(fake)
    reg, jit = await gh.create_jit_runner("r-1", ["linux"], 1)
    with pytest.raises(RunnerNameTakenError):
        await gh.create_jit_runner("r-1", ["linux"], 1)

    runner = fake.runner_from_jit(jit)
    assert runner is not None
    fake.go_online(runner)
    fake.enqueue_job("acme/app", ["linux"])
    fake.acquire_job(runner)
    with pytest.raises(RunnerBusyError):
        await gh.delete_runner(reg.id, "r-1")

    with pytest.raises(GitHubAuthError):
        await _gateway(fake, token="ghs_wrong").sweep_runners()

    fake.unreachable = True
    with pytest.raises(GitHubUnavailableError):
        await gh.sweep_runners()
    fake.unreachable = False

    fake.exhaust_rate_limit(reset_in=120)
    with pytest.raises(RateLimitedError) as limited:
        await gh.sweep_runners()
    assert time.time() + 60 < limited.value.reset_at <= time.time() + 121
    assert gh.rate_limited_until == limited.value.reset_at


async def test_stopped_github_is_unavailable(fake: FakeGitHub) -> None:
    gh = _gateway(fake)
    await fake.stop()
    with pytest.raises(GitHubUnavailableError):
        await gh.sweep_runners()


def test_config_urls() -> None:
    org = parse_config_url("https://github.com/acme")
    assert (org.api_base, org.scope, org.owner) == ("https://api.github.com", "org", "acme")
    repo = parse_config_url("https://ghe.example.com/acme/app/")
    assert (repo.api_base, repo.scope, repo.repo) == (
        "https://ghe.example.com/api/v3",
        "repo",
        "app",
    )
    ent = parse_config_url("https://github.com/enterprises/big")
    assert (ent.scope, ent.owner) == ("enterprise", "big")
    with pytest.raises(ValueError, match=r"spec\.github\.configUrl"):
        parse_config_url("github.com/acme")


async def test_enterprise_scope(fake: FakeGitHub) -> None:
    gh = _gateway(fake, "enterprises/big")
    reg, _ = await gh.create_jit_runner("e-1", ["linux"], 1)
    assert await _names(gh) == ["e-1"]
    await gh.delete_runner(reg.id, "e-1")
    assert await _names(gh) == []


async def test_queue_reads_are_conditional_and_304s_are_free(fake: FakeGitHub) -> None:
    gh = _gateway(fake)
    job = fake.enqueue_job("acme/app", ["self-hosted", "linux"])
    assert await gh.active_run_ids("acme", "app") == [job.run_id]
    jobs = await gh.run_jobs("acme", "app", job.run_id)
    assert [(j.id, j.labels, j.status) for j in jobs] == [
        (job.id, ("self-hosted", "linux"), "queued")
    ]
    used = fake.rate.used
    for _ in range(3):
        assert await gh.active_run_ids("acme", "app") == [job.run_id]
        assert len(await gh.run_jobs("acme", "app", job.run_id)) == 1
    assert fake.rate.used == used, "unchanged queue must cost nothing (all 304)"
    assert gh.requests[("repos/actions/runs", 304)] == 6
    assert gh.rate_limit_remaining == fake.rate.limit - used

    fake.enqueue_job("acme/app", ["linux"])
    assert len(await gh.active_run_ids("acme", "app")) == 2  # a change is seen at once
