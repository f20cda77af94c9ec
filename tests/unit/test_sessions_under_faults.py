"""A listener session rides out GitHub's outages and throttling (issue 12, scenario 3): the
same session is polled again after a backoff (or at the rate limit's reset) rather than
dropped and reopened, which GitHub refuses (409) until it expires the old one; an
acknowledgement GitHub failed is left to the next poll's lastMessageId."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from runnerfleet.gateways.actions_service import MessageBatch, Session
from runnerfleet.gateways.github import GitHubUnavailableError, RateLimitedError
from runnerfleet.services import sessions
from tests.unit.test_sessions import (
    StubClient,
    StubListener,
    event,
    run_until,
    stats,
    worker_for,
)


@dataclass
class FlakyClient(StubClient):
    """The first `down` polls and every ack fail as GitHub does when it is down."""

    down: int = 0
    polls: int = 0

    async def get_messages(
        self, session: Session, last_message_id: int, max_capacity: int
    ) -> MessageBatch | None:
        self.polls += 1
        self.log.append(f"poll after {last_message_id}")
        if self.down:
            self.down -= 1
            raise GitHubUnavailableError("GET messages: answered 503 (4 attempts)")
        return await super().get_messages(session, last_message_id, max_capacity)

    async def ack(self, session: Session, message_id: int) -> None:
        raise GitHubUnavailableError("DELETE messages/{id}: answered 503 (4 attempts)")


async def test_an_outage_keeps_the_session_and_acks_through_the_next_poll(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sessions, "_backoff", lambda attempt, cap: 0.01)
    client = FlakyClient([
        MessageBatch(1, stats(assigned=1), (event("JobAssigned", 1),)),
        MessageBatch(2, stats(assigned=2), (event("JobAssigned", 2),)),
    ], down=5)  # fmt: skip
    listener = StubListener()
    worker = worker_for(client, listener)
    await run_until(worker, lambda: "poll after 2" in client.log)
    assert client.log.count("session") == 1, "the session is kept through the outage"
    assert "delete-session" not in client.log[:-1]
    assert client.log[1:7] == ["poll after 0"] * 6  # five failed, then the batch
    assert "poll after 1" in client.log, "the failed ack rides on the next poll"
    assert [demand for demand, _ in listener.writes] == [0, 1, 2]


def test_a_throttled_poll_waits_for_the_reset() -> None:
    now = 1_800_000_000.0
    pause = sessions._pause(RateLimitedError("throttled", now + 90), 1, now)
    assert 90 <= pause <= 91
    assert sessions._pause(RateLimitedError("throttled", now - 5), 1, now) <= 1.5
    for failures in range(1, 12):
        assert 0.5 <= sessions._pause(GitHubUnavailableError("503"), failures, now) <= 10
