"""The GitHub App's private key rotated in its Secret during a job stream (issue 12, scenario 7).

The fleet runs on the App flow (JWT -> installation token -> registration token -> the
Actions service's admin token). Mid-stream, as an admin answering a leaked key would: a new
key is generated for the App, the Secret gets it, and the old key is deleted at once (the fake
GitHub refuses its JWTs from then on, while tokens already minted with it stay valid until
they expire, as GitHub's docs say). What must hold:

- no job lost or run twice, no duplicate registration, no orphan after convergence;
- the new key is used within a round: the first JWT signed with it arrives within
  NEW_KEY_WITHIN seconds of the rotation;
- no 401 storm: at most MAX_REFUSED refused JWTs after the rotation, none once the new key
  is in use, and the new key never reaches the operator's log.

Tokens are shortened so the App key is used every few seconds instead of every hour: the
fake's installation tokens live 65 s (githubkit renews them a minute early), registration
tokens are due again 5 s after they are issued (20 min of margin + 5 s), and the Actions
service's admin tokens live 65 s (renewed a minute early).

The rotation moments are the fault, drawn from a seeded RNG (printed; RUNNERFLEET_CHAOS_SEED
replays it); every wait on the system is on a condition with a timeout.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import time
from dataclasses import dataclass, replace
from typing import Any

import pytest
from kubernetes_asyncio import client

from runnerfleet.planning.team_listener import OPERATOR_MARGIN
from runnerfleet.sim import actions_service
from runnerfleet.sim.github import FakeJob
from tests.support.chaos import (
    DuplicateWatch,
    Outcome,
    all_completed,
    converged,
    feed,
    github_requests,
    protocol_team,
    record,
    seed,
)
from tests.support.fleet import Fleet, app_key
from tests.support.kube import wait_for

SCENARIO = "7 App key rotated"
TEAM = ["self-hosted", "linux", "team-k"]
SET = "team-k-linux"
MIN_RUNNERS, MAX_RUNNERS = 1, 20
NEW_KEY_WITHIN = 40.0  # the next token renewal (~5-10 s here) or TeamListener round (<36 s)
MAX_REFUSED = 3  # JWTs of the deleted key refused: one per path that mints, at most


@dataclass
class Rotation:
    at: float  # time.time() of the rotation
    new_key: str  # the fake's key_id of the new public key
    refused_before: int  # 401s on /app/ routes before it
    new_key_after_s: float = 0.0
    refused: int = 0  # 401s on /app/ routes from the rotation to the new key's first JWT


def _refused(f: Fleet) -> int:
    """JWTs the fake refused (401 on an App route) so far."""
    return sum(n for (_, route, status), n in f.github.requests.items()
               if status == 401 and "/app/" in route)  # fmt: skip


def _baseline(f: Fleet) -> None:
    """RUNNERFLEET_CHAOS_OPERATOR_PATH: run the operator from that directory (e.g. an older
    commit's `operator/`), to measure a build before a fix against the same scenario."""
    if path := os.environ.get("RUNNERFLEET_CHAOS_OPERATOR_PATH"):
        f.operator.stop()
        f.operator.env["PYTHONPATH"] = path
        f.operator.start()


async def _setup(f: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    _baseline(f)
    monkeypatch.setattr(actions_service, "REGISTRATION_TOKEN_TTL", OPERATOR_MARGIN + 5)
    f.github.installation_token_ttl = 65.0
    f.github.actions.options = replace(
        f.github.actions.options, long_poll_timeout=2.0, admin_token_ttl=65.0
    )
    await protocol_team(f, "team-k", SET, TEAM, min_runners=MIN_RUNNERS, max_runners=MAX_RUNNERS)


async def rotate(f: Fleet) -> tuple[Rotation, str]:
    """A new key for the App, into the Secret, and the old key deleted at once; returns the
    rotation and the new private key (to look for in logs)."""
    private, public = app_key()
    old = f.github.app_public_key
    assert old is not None
    f.github.rotate_app_key(public)
    data = {"github_app_private_key": base64.b64encode(private.encode()).decode()}
    await client.CoreV1Api(f.kube).patch_namespaced_secret("github-app", f.namespace,
                                                           {"data": data})  # fmt: skip
    f.github.revoke_app_key(old)
    return Rotation(time.time(), f.github.key_id(public), _refused(f)), private


async def _new_key_used(f: Fleet, r: Rotation) -> None:
    await wait_for(
        lambda: asyncio.sleep(0, f.github.app_jwts[r.new_key]), lambda n: n > 0,
        what="a JWT signed with the new key", within=NEW_KEY_WITHIN, interval=0.1,
    )  # fmt: skip
    r.new_key_after_s = round(time.time() - r.at, 1)
    r.refused = _refused(f) - r.refused_before


@dataclass
class Form:
    form: str
    jobs: int
    span: float
    rotations: int


async def _rotations(f: Fleet, rng: random.Random, s: Form) -> tuple[list[Rotation], list[str]]:
    """Rotate `s.rotations` times at random moments of the stream, each after the previous
    one's new key is in use."""
    done: list[Rotation] = []
    keys: list[str] = []
    began = time.monotonic()
    for i in range(s.rotations):
        moment = began + s.span * (i + rng.uniform(0.2, 0.6)) / s.rotations
        await asyncio.sleep(max(0.0, moment - time.monotonic()))  # the fault's moment
        rotation, private = await rotate(f)
        keys.append(private)
        await _new_key_used(f, rotation)
        done.append(rotation)
    return done, keys


async def _run(f: Fleet, monkeypatch: pytest.MonkeyPatch, s: Form) -> None:
    value = seed(f"key rotation ({s.form})")
    rng = random.Random(value)  # noqa: S311 (a replayable fault schedule)
    await _setup(f, monkeypatch)
    f.github.reset_counters()
    jobs: list[FakeJob] = []
    dupes = DuplicateWatch(f).start()
    feeding = asyncio.create_task(feed(f, rng, jobs, count=s.jobs, span=s.span, labels=TEAM))
    rotations: list[Rotation] = []
    try:
        rotations, keys = await _rotations(f, rng, s)
        last_fault = rotations[-1].at
        refused_at_switch = _refused(f)
        await feeding
        await all_completed(jobs, within=90)
        found_orphans = await converged(f, {SET: MIN_RUNNERS}, within=60)
        convergence = time.time() - last_fault
        refused_after = _refused(f) - refused_at_switch
    finally:
        duplicates = await dupes.stop()
        feeding.cancel()
    answered, counted = github_requests(f)
    logs = f.operator.logs()
    leaked = sum("".join(k.strip().splitlines()[1:-1])[:64] in logs for k in keys)
    details: dict[str, Any] = {
        "rotations": len(rotations),
        "new_key_after_s": [r.new_key_after_s for r in rotations],
        "refused_jwts": [r.refused for r in rotations],
        "refused_after_switch": refused_after,
        "jwts_by_key": len(f.github.app_jwts),
    }
    record(Outcome(
        scenario=SCENARIO, form=s.form,
        faults=f"App key rotated {len(rotations)}x, the old key deleted at once",
        jobs=len(jobs), lost=len(f.runners.lost_jobs), duplicates=duplicates,
        orphans=len(found_orphans), convergence_s=round(convergence, 1),
        github_requests=answered, github_counted=counted, seed=value,
        found=FOUND, details=details,
    ))  # fmt: skip
    assert f.runners.lost_jobs == [], "jobs lost"
    assert {j.conclusion for j in jobs} == {"success"}
    assert duplicates == 0, dupes.samples[:3]
    assert found_orphans == [], found_orphans
    assert all(r.new_key_after_s <= NEW_KEY_WITHIN for r in rotations)
    assert all(r.refused <= MAX_REFUSED for r in rotations), details
    assert refused_after == 0, "the deleted key was still used after the switch"
    assert leaked == 0, "a private key reached the operator's log"


FOUND = (
    "after a rotation the operator kept the deleted key: a refused token mint read as an "
    "outage, githubkit's process-wide JWT cache (8 min) and a registration-token gateway made "
    "once (for good) resent it, and the TeamListener path waited out a 5-min Secret cache; fixed"
)


async def test_app_key_rotated_mid_stream_new_key_used_within_a_round(
    app_fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Short form (make test): one rotation during 15 jobs."""
    await _run(app_fleet, monkeypatch, Form("short", jobs=15, span=10.0, rotations=1))


@pytest.mark.slow
@pytest.mark.chaos
@pytest.mark.timeout(900)
async def test_key_rotation_long_form(app_fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12's size (make chaos): three rotations during a 100-job stream."""
    await _run(app_fleet, monkeypatch, Form("long", jobs=100, span=120.0, rotations=3))
