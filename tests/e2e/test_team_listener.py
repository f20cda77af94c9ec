"""TeamListener end to end: the operator runs a listener Deployment; a stand-in kubelet runs
its pod's real program (`runnerfleet listen`) with the pod's own ServiceAccount token."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client

from runnerfleet import conventions as c
from runnerfleet.listener.signature import sign
from tests.support.factories import make_scale_set, make_team_listener
from tests.support.fleet import Fleet
from tests.support.kube import wait_for

TEAM_A = ["self-hosted", "linux", "team-a"]


async def _team_a(f: Fleet, poll: str = "2s", **listener: object) -> None:
    await f.apply_scale_set(make_scale_set(
        "team-a-linux", config_url=f.config_url, team="team-a", labels=TEAM_A,
        min_runners=1, max_runners=20, scaleDownDelay="1s",
    ))  # fmt: skip
    await f.apply_team_listener(make_team_listener(
        "team-a", team="team-a", config_url=f.config_url, repositories=["app"],
        scaleSetSelector={"matchLabels": {c.LABEL_TEAM: "team-a"}}, pollInterval=poll,
        **listener,
    ))  # fmt: skip


async def test_listener_children_and_readiness(running_fleet: Fleet) -> None:
    f = running_fleet
    await _team_a(f)
    tl = await wait_for(
        lambda: f.team_listener("team-a"),
        lambda t: t.get("status", {}).get("listenerReady") is True,
        what="TeamListener listenerReady",
    )
    assert (
        next(c_ for c_ in tl["status"]["conditions"] if c_["type"] == "Ready")["status"] == "True"
    )
    net = client.NetworkingV1Api(f.kube)
    policy = await net.read_namespaced_network_policy("team-a-runners", f.namespace)
    assert policy.spec.pod_selector.match_labels == {
        c.LABEL_TEAM: "team-a", c.LABEL_COMPONENT: c.COMPONENT_RUNNER,
    }  # fmt: skip
    assert policy.spec.ingress == [] or policy.spec.ingress is None
    https = policy.spec.egress[1]
    assert https.ports[0].port == 443
    assert https.to[0].ip_block._except == ["169.254.169.254/32"]
    # The team's runner pods are the ones the policy selects.
    await f.expect_runners("team-a-linux", idle=1)
    pods = await f.pods("team-a-linux")
    assert all(p.metadata.labels[c.LABEL_TEAM] == "team-a" for p in pods)


async def test_queued_jobs_become_busy_runners_and_other_teams_do_not(running_fleet: Fleet) -> None:
    f = running_fleet
    await _team_a(f)
    await f.expect_runners("team-a-linux", idle=1)
    await f.listener_process()
    other = [f.github.enqueue_job("acme/app", ["self-hosted", "linux", "team-b"], 1.0)
             for _ in range(3)]  # fmt: skip
    jobs = [f.github.enqueue_job("acme/app", TEAM_A, 6.0) for _ in range(7)]
    started = time.monotonic()
    await f.expect_runners("team-a-linux", idle=1, busy=7, within=2 + 5)  # pollInterval + 5 s
    elapsed = time.monotonic() - started
    await wait_for(
        lambda: asyncio.sleep(0, [j.status for j in jobs]),
        lambda s: s == ["completed"] * 7, what="team-a's 7 jobs to complete", within=30,
    )  # fmt: skip
    await f.expect_runners("team-a-linux", idle=1, within=30)
    assert all(j.status == "queued" for j in other), "team-b's jobs must never run on team-a"
    tl = await f.team_listener("team-a")
    assert tl["status"]["poll"]["unmatchedJobs"] == 3
    print(f"7 jobs busy after {elapsed:.1f}s")


async def test_most_specific_scale_set_gets_the_job(running_fleet: Fleet) -> None:
    f = running_fleet
    for name, labels in (("plain", ["linux"]), ("gpu", ["linux", "gpu"])):
        await f.apply_scale_set(make_scale_set(
            name, config_url=f.config_url, team="team-a", labels=labels, max_runners=5,
        ))  # fmt: skip
    await f.apply_team_listener(make_team_listener(
        "team-a", team="team-a", config_url=f.config_url, pollInterval="1s",
    ))  # fmt: skip
    gpu_job = f.github.enqueue_job("acme/app", ["linux", "gpu"], 30.0)
    plain_job = f.github.enqueue_job("acme/app", ["linux"], 30.0)
    await f.expect_runners("gpu", idle=0, busy=1, within=20)
    await f.expect_runners("plain", idle=0, busy=1, within=20)
    assert (gpu_job.runner_name or "").startswith("gpu-")
    assert (plain_job.runner_name or "").startswith("plain-")


async def test_idle_polling_costs_no_rate_limit(running_fleet: Fleet) -> None:
    f = running_fleet
    await _team_a(f, poll="1s")
    await f.listener_process()
    await wait_for(
        lambda: f.team_listener("team-a"),
        lambda t: bool(t.get("status", {}).get("poll", {}).get("lastSuccessfulPoll")),
        what="a first successful poll",
    )
    runs = "/api/v3/repos/{org}/{repo}/actions/runs"

    def counted() -> tuple[int, int]:
        return (
            sum(
                n
                for (_, path, status), n in f.github.requests.items()
                if path == runs and status != 304
            ),
            sum(
                n
                for (_, path, status), n in f.github.requests.items()
                if path == runs and status == 304
            ),
        )

    before, _ = counted()
    _, not_modified_before = counted()
    await wait_for(
        lambda: asyncio.sleep(0, counted()[1] - not_modified_before),
        lambda n: n >= 16, what="8 more idle polls (2 conditional requests each)", within=30,
    )  # fmt: skip
    assert counted()[0] == before, "idle polls must all be answered 304"


async def test_webhook_signature_and_instant_reaction(running_fleet: Fleet) -> None:
    f = running_fleet
    core = client.CoreV1Api(f.kube)
    await core.create_namespaced_secret(f.namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name="hook"),
        string_data={"github_webhook_secret": "It's a Secret to Everybody"},
    ))  # fmt: skip
    await _team_a(f, poll="10m", webhook={"enabled": True, "secretRef": {"name": "hook"}})
    await f.expect_runners("team-a-linux", idle=1)
    proc = await f.listener_process()
    url = f"http://127.0.0.1:{proc.webhook_port}/webhook"
    await wait_for(
        lambda: f.team_listener("team-a"),
        lambda t: bool(t.get("status", {}).get("poll", {}).get("lastSuccessfulPoll")),
        what="the first poll (the next one is 10 minutes away)",
    )
    job = f.github.enqueue_job("acme/app", TEAM_A, 30.0)
    payload = json.dumps({
        "action": "queued",
        "workflow_job": {"id": job.id, "run_id": job.run_id, "labels": TEAM_A, "status": "queued"},
        "repository": {"full_name": "acme/app"},
    }).encode()  # fmt: skip
    headers = {"X-GitHub-Event": "workflow_job", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        await wait_for(
            lambda: _post(session, url, b"{}", headers), lambda s: s is not None,
            what="the webhook port to answer",
        )  # fmt: skip
        assert await _post(session, url, payload, headers) == 401  # unsigned
        bad = {**headers, "X-Hub-Signature-256": sign(b"wrong", payload)}
        assert await _post(session, url, payload, bad) == 401
        rss = await f.scale_set("team-a-linux")
        assert (rss["status"].get("demand") or {}).get("assignedJobs", 0) == 0  # no state change
        good = {**headers, "X-Hub-Signature-256": sign(b"It's a Secret to Everybody", payload)}
        sent = time.monotonic()
        assert await _post(session, url, payload, good) == 200

    async def runner_pods() -> int:
        return sum(p.status.phase == "Running" for p in await f.pods("team-a-linux"))

    await wait_for(runner_pods, lambda n: n == 2, what="a second runner started", within=2.0)
    started = time.monotonic() - sent
    await f.expect_runners("team-a-linux", idle=1, busy=1, within=5.0)
    assert job.runner_name is not None
    print(f"webhook -> runner Running in {started:.2f}s")


async def _post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> int | None:
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            return resp.status
    except aiohttp.ClientConnectionError:
        return None


async def test_rate_limit_makes_listener_back_off_and_report(running_fleet: Fleet) -> None:
    f = running_fleet
    await _team_a(f, poll="1s")
    await f.expect_runners("team-a-linux", idle=1)
    await f.listener_process()
    before = f.registrations("team-a-linux")
    f.github.exhaust_rate_limit(reset_in=20)
    await f.wait_condition("tl", "team-a", "Polling", reason="RateLimited", within=20)
    tl = await f.team_listener("team-a")
    assert tl["status"]["poll"]["rateLimitedUntil"]
    refused = sum(n for (_, _, s), n in f.github.requests.items() if s == 403)
    for _ in range(10):  # the listener waits for the reset instead of retrying every poll
        assert f.registrations("team-a-linux") == before
        await asyncio.sleep(0.3)
    assert sum(n for (_, _, s), n in f.github.requests.items() if s == 403) - refused <= 2


async def test_deleted_listener_pod_comes_back_and_demand_flows(running_fleet: Fleet) -> None:
    f = running_fleet
    await _team_a(f, poll="1s")
    first = await f.listener_process()
    core = client.CoreV1Api(f.kube)
    await core.delete_namespaced_pod(first.pod, f.namespace, grace_period_seconds=0)
    second = await wait_for(
        lambda: asyncio.sleep(0, f.kubelet.running()),
        lambda running: len(running) == 1 and running[0].pod != first.pod,
        what="a new listener pod's process", within=30,
    )  # fmt: skip
    assert second
    f.github.enqueue_job("acme/app", TEAM_A, 30.0)
    await f.expect_runners("team-a-linux", idle=1, busy=1, within=15)


async def test_listener_token_cannot_touch_other_namespaces_or_secrets(
    running_fleet: Fleet,
) -> None:
    f = running_fleet
    await _team_a(f)
    proc = await f.listener_process()
    from kubernetes_asyncio.client.exceptions import ApiException

    from tests.support.kube import api_client

    kubeconfig = f.kubelet.work_dir / f"{proc.pod}.kubeconfig"
    async with api_client(kubeconfig) as as_listener:
        custom = client.CustomObjectsApi(as_listener)
        core = client.CoreV1Api(as_listener)
        # Its own namespace's scale sets: readable.
        await custom.list_namespaced_custom_object(
            c.GROUP, c.VERSION, f.namespace, "runnerscalesets"
        )
        for call in (
            custom.list_namespaced_custom_object(c.GROUP, c.VERSION, "default", "runnerscalesets"),
            custom.patch_namespaced_custom_object_status(
                c.GROUP, c.VERSION, "default", "runnerscalesets", "x", {"status": {}}),
            core.list_namespaced_secret(f.namespace),
            core.read_namespaced_secret("github-app", f.namespace),
            core.create_namespaced_pod(f.namespace, {"metadata": {"name": "x"},
                                       "spec": {"containers": [{"name": "x", "image": "x"}]}}),
            custom.patch_namespaced_custom_object(
                c.GROUP, c.VERSION, f.namespace, "runnerscalesets", "team-a-linux",
                {"spec": {"maxRunners": 99}}),
        ):  # fmt: skip
            with pytest.raises(ApiException) as err:
                await call
            assert err.value.status == 403, err.value


async def test_listener_metrics_expose_the_families(running_fleet: Fleet) -> None:
    f = running_fleet
    await _team_a(f, poll="1s")
    proc = await f.listener_process()
    await wait_for(  # a 2 s job must not be over before the listener's first poll
        lambda: f.team_listener("team-a"),
        lambda t: bool(t.get("status", {}).get("poll", {}).get("lastSuccessfulPoll")),
        what="a first successful poll",
    )
    f.github.enqueue_job("acme/app", TEAM_A, 2.0)
    await f.expect_runners("team-a-linux", idle=1, busy=1, within=20)

    async def scrape() -> str:
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"http://127.0.0.1:{proc.metrics_port}/metrics") as resp,
        ):
            return await resp.text()

    text = await wait_for(
        scrape, lambda t: "runnerfleet_job_queue_wait_seconds_count" in t and
        'runnerfleet_job_queue_wait_seconds_count{namespace=' in t, what="queue wait observed",
        within=20,
    )  # fmt: skip
    for family in (
        "runnerfleet_listener_queued_jobs", "runnerfleet_listener_demand",
        "runnerfleet_listener_unmatched_jobs", "runnerfleet_github_requests_total",
        "runnerfleet_github_rate_limit_remaining", "runnerfleet_listener_polls_total",
        "runnerfleet_job_queue_wait_seconds_bucket",
    ):  # fmt: skip
        assert family in text, family


async def test_spec_change_rolls_the_listener(running_fleet: Fleet) -> None:
    f = running_fleet
    await _team_a(f, poll="5s")
    first = await f.listener_process()
    api = client.CustomObjectsApi(f.kube)
    await api.patch_namespaced_custom_object(
        c.GROUP, c.VERSION, f.namespace, c.TEAM_LISTENER_PLURAL, "team-a",
        {"spec": {"pollInterval": "1s"}},
        _content_type="application/merge-patch+json",  # type: ignore[call-arg]
    )  # fmt: skip
    second = await wait_for(
        lambda: asyncio.sleep(0, f.kubelet.running()),
        lambda running: len(running) == 1 and running[0].pod != first.pod,
        what="the listener to roll to a new pod", within=30,
    )  # fmt: skip
    assert second[0].pod != first.pod
    f.github.enqueue_job("acme/app", TEAM_A, 30.0)
    await f.expect_runners("team-a-linux", idle=1, busy=1, within=10)


# ---------------------------------------------------------------- an organisation at scale
ORG_REPOS = [f"acme/svc-{i:04}" for i in range(2000)]
ARCHIVED = [f"acme/old-{i:02}" for i in range(20)]
RUNS = "/api/v3/repos/{org}/{repo}/actions/runs"


async def _org_team(f: Fleet, poll: str, repos: int = 2000, **listener: object) -> None:
    """`repos` repositories (and 20 archived ones) on the installation; team-a watches them
    all with a scale set that runs nothing (maxRunners 0), so every job stays queued."""
    f.github.add_repositories(ORG_REPOS[:repos])
    f.github.add_repositories(ARCHIVED, archived=True)
    await f.apply_scale_set(make_scale_set(
        "team-a-linux", config_url=f.config_url, team="team-a", labels=TEAM_A, max_runners=0,
    ))  # fmt: skip
    body = make_team_listener(
        "team-a", team="team-a", config_url=f.config_url,
        scaleSetSelector={"matchLabels": {c.LABEL_TEAM: "team-a"}}, pollInterval=poll,
        **listener,
    )  # fmt: skip
    body["spec"]["repositories"] = {"all": True}
    await f.apply_team_listener(body)


def _spread(f: Fleet, repos: int = 2000, count: int = 300) -> list[Any]:
    """`count` queued jobs in different repositories (13 is coprime to 2,000 and 300), plus
    one in an archived repository, which must never count."""
    jobs = [f.github.enqueue_job(ORG_REPOS[(i * 13) % repos], TEAM_A, 3600.0) for i in range(count)]
    f.github.enqueue_job(ARCHIVED[0], TEAM_A, 3600.0)
    return jobs


async def _demand(f: Fleet) -> int:
    rss = await f.scale_set("team-a-linux")
    return int(((rss.get("status") or {}).get("demand") or {}).get("assignedJobs", -1))


def _github_requests(f: Fleet) -> tuple[int, int]:
    """(all, counted against the rate limit) GitHub requests so far: the listener's queue
    reads (the operator makes none here: it runs no runner)."""
    queue = [(t, s, n) for (_, t, s), n in f.github.requests.items() if "/actions/runners" not in t]
    return sum(n for *_, n in queue), sum(n for _, s, n in queue if s != 304)


async def _polls(proc: Any) -> int:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{proc.metrics_port}/metrics") as resp,
    ):
        text = await resp.text()
    return sum(
        int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
        if line.startswith("runnerfleet_listener_polls_total{")
    )  # fmt: skip


async def _per_poll(f: Fleet, proc: Any, polls: int, within: float) -> tuple[float, float]:
    """GitHub requests per poll (all, counted) over the next `polls` polls."""
    start, (all_0, counted_0) = await _polls(proc), _github_requests(f)
    await wait_for(lambda: _polls(proc), lambda n: n >= start + polls,
                   what=f"{polls} more polls", within=within)  # fmt: skip
    done, (all_1, counted_1) = await _polls(proc), _github_requests(f)
    return (all_1 - all_0) / (done - start), (counted_1 - counted_0) / (done - start)


async def _first_read_done(f: Fleet, repos: int, within: float) -> None:
    """Never-read repositories go first, so the first 2 * `repos` run listings are the first
    read of all of them (two lists each, one page each)."""
    await wait_for(
        lambda: asyncio.sleep(0, sum(n for (_, t, _), n in f.github.requests.items() if t == RUNS)),
        lambda n: n >= 2 * repos, what="every repository read once", within=within,
    )  # fmt: skip


@pytest.mark.slow  # `make test-slow`; `make test` runs the 100-repository form below
@pytest.mark.timeout(720)  # GitHub's secondary limit makes the first read ~5 minutes
async def test_org_of_2000_repositories_polling_alone_demand_is_exact(
    running_fleet: Fleet,
) -> None:
    await _polling_alone_demand_is_exact(running_fleet, repos=2000, jobs=300, poll="10s")


async def test_org_of_100_repositories_polling_alone_demand_is_exact(
    running_fleet: Fleet,
) -> None:
    """The short form: 30 jobs over 100 repositories (and the archived ones), paged like the
    long form, whose reads fit well inside one minute's share of the secondary limit."""
    await _polling_alone_demand_is_exact(running_fleet, repos=100, jobs=30, poll="3s")


async def _polling_alone_demand_is_exact(f: Fleet, repos: int, jobs: int, poll: str) -> None:
    spread = _spread(f, repos, jobs)
    await _org_team(f, poll=poll, repos=repos)
    proc = await f.listener_process()
    started = time.monotonic()
    await wait_for(lambda: _demand(f), lambda d: d == jobs, what=f"demand {jobs}", within=480)
    found = time.monotonic() - started
    await _first_read_done(f, repos, within=120)
    busy = await _per_poll(f, proc, polls=4, within=120)
    assert await _demand(f) == jobs
    refused = sum(n for (_, _, s), n in f.github.requests.items() if s in (403, 429))
    assert refused == 0, "reads are paced under GitHub's limits: nothing refused"
    for job in spread:  # every job ends; no webhooks: the polls alone must see it
        job.status, job.conclusion, job.completed_at = "completed", "success", time.time()
    await wait_for(lambda: _demand(f), lambda d: d == 0, what="demand back to 0", within=180)
    await wait_for(
        lambda: f.team_listener("team-a"),
        lambda t: t["status"]["poll"]["queuedJobs"] == 0, what="the job table empty",
    )  # fmt: skip
    idle = await _per_poll(f, proc, polls=4, within=120)
    print(f"{repos} repositories, polling alone: demand {jobs} after {found:.0f}s; GitHub requests "
          f"per poll (all, counted): with 300 jobs {busy[0]:.1f}, {busy[1]:.1f}; "
          f"idle {idle[0]:.1f}, {idle[1]:.1f}")  # fmt: skip
    assert idle[1] == 0, "an idle organisation must cost no rate limit (all 304)"
    pages = -(-(repos + len(ARCHIVED)) // 100)
    assert idle[0] <= pages + 2 * 8 + 2, "idle: the repository list and the trickle"


async def test_org_of_2000_repositories_with_webhooks_demand_is_exact(
    running_fleet: Fleet,
) -> None:
    f = running_fleet
    core = client.CoreV1Api(f.kube)
    secret = "It's a Secret to Everybody"
    await core.create_namespaced_secret(f.namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name="hook"), string_data={"github_webhook_secret": secret},
    ))  # fmt: skip
    await _org_team(f, poll="5s", webhook={"enabled": True, "secretRef": {"name": "hook"}})
    proc = await f.listener_process()
    await wait_for(
        lambda: f.team_listener("team-a"),
        lambda t: bool(t.get("status", {}).get("poll", {}).get("lastSuccessfulPoll")),
        what="the first poll (it has read the repository list)",
    )
    f.github.webhook_url = f"http://127.0.0.1:{proc.webhook_port}/webhook"
    f.github.webhook_secret = secret.encode()
    sent = time.monotonic()
    _spread(f)
    # Long before the polls could have read the 300 repositories (about five minutes).
    await wait_for(lambda: _demand(f), lambda d: d == 300, what="demand 300", within=60)
    took = time.monotonic() - sent
    seen: set[int] = set()
    polls = await _polls(proc)

    async def probe() -> int:
        seen.add(await _demand(f))
        return await _polls(proc)

    # Polls keep reconciling meanwhile; none may drop a job the webhooks reported.
    await wait_for(probe, lambda n: n >= polls + 4, what="4 more polls", within=120)
    assert seen == {300}
    print(f"2,000 repositories with webhooks: demand 300 {took:.1f}s after the deliveries")


@pytest.mark.slow  # 47 s; make test has the builder's side (test_team_listener_planner.py)
async def test_a_rotated_credentials_secret_rolls_the_listener(running_fleet: Fleet) -> None:
    """Listener pods read their credentials as env, at start only: when the credentials
    Secret changes (a new token, the old one revoked), the pod template's secrets digest
    changes and the pods roll. Before, a REST team's listener kept the revoked token and was
    refused (401) on every poll until something else restarted it."""
    f = running_fleet
    f.operator.stop()  # read the Secrets every 2 s instead of every 5 min
    f.operator.env["RUNNERFLEET_LISTENER_SECRETS_CHECK_SECONDS"] = "2"
    f.operator.start()
    await _team_a(f, poll="1s")
    first = await f.listener_process()
    apps = client.AppsV1Api(f.kube)

    async def digest() -> str | None:
        deployment = await apps.read_namespaced_deployment("team-a-listener", f.namespace)
        annotations = deployment.spec.template.metadata.annotations or {}
        return annotations.get(c.ANNOTATION_SECRETS_HASH)

    before = await wait_for(digest, bool, what="a secrets digest on the pod template")
    new = f.github.add_token()
    await client.CoreV1Api(f.kube).patch_namespaced_secret("github-app", f.namespace, {
        "data": {"github_token": base64.b64encode(new.encode()).decode()}})  # fmt: skip
    f.github.tokens.discard(f.token)  # the old token revoked
    after = await wait_for(digest, lambda d: d != before, what="a new digest", within=30)
    assert len(after or "") == 16, "a digest, never the token"
    await wait_for(
        lambda: asyncio.sleep(0, f.kubelet.running()),
        lambda running: len(running) == 1 and running[0].pod != first.pod,
        what="the listener rolled to a new pod", within=30,
    )  # fmt: skip
    f.github.enqueue_job("acme/app", TEAM_A, 30.0)
    await f.expect_runners("team-a-linux", idle=1, busy=1, within=30)
