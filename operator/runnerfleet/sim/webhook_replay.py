"""Webhook delivery faults for the fake GitHub: replays and reordering (issue 12, scenario 5).

GitHub does not promise exactly-once, in-order delivery: a delivery may be redelivered (by
hand or by an integrator's retry) with the same `X-GitHub-Delivery`, and `queued`,
`in_progress` and `completed` for one job travel independently, so `completed` can arrive
before `queued`. `WebhookReplay` tells the fake's delivery path (`FakeGitHub._deliver`) when
to send each copy of a delivery: `copies` copies, each after its own random delay of up to
`spread` seconds, and a share (`hold_share`) held back `hold` seconds more, long enough for
the job to finish meanwhile. Every planned copy is recorded (`sent`), so a test can tell how
many jobs saw their news out of order.

Layer: tooling (sim). Pure: no I/O; times are arguments, randomness is the given `rng`.
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from dataclasses import dataclass, field

ORDER = {"queued": 0, "in_progress": 1, "completed": 2}


@dataclass(frozen=True)
class PlannedCopy:
    at: float  # when the copy goes out (the delivery's moment + its delay)
    delivery: str  # X-GitHub-Delivery, shared by every copy of one delivery
    job_id: int
    action: str  # queued / in_progress / completed


@dataclass
class WebhookReplay:
    rng: random.Random
    copies: int = 3
    spread: float = 1.0
    hold_share: float = 0.0
    hold: float = 0.0
    sent: list[PlannedCopy] = field(default_factory=list)

    def delays(self, delivery: str, job_id: int, action: str, now: float) -> list[float]:
        """Seconds to wait before sending each copy of this delivery (one entry per copy)."""
        planned = []
        for _ in range(self.copies):
            delay = self.rng.uniform(0.0, self.spread)
            if self.rng.random() < self.hold_share:
                delay += self.hold
            planned.append(delay)
            self.sent.append(PlannedCopy(now + delay, delivery, job_id, action))
        return planned

    def max_delay(self) -> float:
        """The longest any copy can wait: how stale a listener's news may be."""
        return self.spread + (self.hold if self.hold_share > 0 else 0.0)

    def out_of_order(self) -> int:
        """Jobs whose copies went out in an order that disagrees with the job's life: a later
        action (e.g. `completed`) sent before some copy of an earlier one (e.g. `queued`)."""
        by_job: dict[int, list[PlannedCopy]] = defaultdict(list)
        for copy in self.sent:
            by_job[copy.job_id].append(copy)
        return sum(1 for copies in by_job.values() if _disordered(copies))

    def replayed(self) -> int:
        """Copies beyond the first of each delivery."""
        return len(self.sent) - len({c.delivery for c in self.sent})


def _disordered(copies: list[PlannedCopy]) -> bool:
    ranks = [ORDER.get(c.action, 0) for c in sorted(copies, key=lambda c: c.at)]
    return any(later < earlier for earlier, later in itertools.pairwise(ranks))
