"""The log scan every e2e fleet runs at teardown (reliability item 5) finds each kind of
secret value the fake GitHub issued, and nothing in a clean log."""

from __future__ import annotations

from typing import Any

from runnerfleet.sim.github import FakeGitHub
from tests.support.fleet import Fleet, leaked_secrets


def _fleet(github: FakeGitHub, token: str) -> Fleet:
    none: Any = None
    return Fleet(none, "ns", github, none, none, token, none)


def test_each_kind_of_secret_is_found_and_a_clean_log_passes() -> None:
    github = FakeGitHub()
    pat = github.add_token()
    registration, _ = github.actions.issue_registration_token("acme")
    github.webhook_secret = b"hook-secret-value"
    f = _fleet(github, pat)
    clean = "INFO acting; created runner linux-abc12 (id 1001)"
    assert leaked_secrets(f, [clean]) == []
    assert leaked_secrets(f, [clean, f"Authorization: token {pat}"]) == [
        "github_token", "installation or user token"]  # fmt: skip
    assert leaked_secrets(f, [f"RemoteAuth {registration}"]) == ["registration token"]
    assert leaked_secrets(f, ["secret=hook-secret-value"]) == ["webhook secret"]
    github.jit_configs.append("eyJ" + "A" * 80 + "fQ==")
    assert leaked_secrets(f, [f"jitconfig={github.jit_configs[0]}"]) == ["JIT config"]


def test_an_app_key_is_found_by_either_end_of_its_body() -> None:
    body = "MIIEv" + "A" * 200 + "Zq9"
    key = f"-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n"
    f = _fleet(FakeGitHub(), key)
    assert leaked_secrets(f, [body[-70:]]) == ["App private key"]
    assert leaked_secrets(f, ["BEGIN PRIVATE KEY"]) == []
