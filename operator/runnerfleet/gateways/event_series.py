"""Event series: fold repeated Events into one object, as Kubernetes' own recorders do.

client-go's EventCorrelator (tools/record) keys an Event by its object, type, reason and
message: a repeat within a window updates the first one's `count` and `lastTimestamp`
instead of creating a new object, and once more than 10 Events with the same object, type and
reason but different messages came within 10 minutes, the rest go to one object whose
message says "(combined from similar events): <latest>". events.k8s.io's recorder goes one
step further and writes a series' count only now and then (every 30 min there). This does
both, with a shorter flush: repeats of one object, type and reason are written at most once
every FLUSH_SECONDS (the count shows every repeat counted up to that write; one that comes
sooner is counted and waits for the next write).

So whatever rate a cause repeats at, one object, type and reason cost at most
SIMILAR_AFTER + 1 creates plus one patch per FLUSH_SECONDS in a window.

Layer: gateways (no I/O itself: the gateway asks `decide`, writes, then tells `wrote`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

WINDOW_SECONDS = 600.0  # client-go's aggregation window (10 min)
SIMILAR_AFTER = 10  # distinct messages per object+type+reason in the window before combining
FLUSH_SECONDS = 30.0  # a series' count is written at most this often
MAX_KEYS = 4096  # series remembered (least recently used go first)
COMBINED = "(combined from similar events): "


@dataclass
class _Series:
    name: str | None = None  # the Event object, once created
    first: float = 0.0
    count: int = 0  # occurrences, written or not


@dataclass(frozen=True)
class Decision:
    """What to write: `create` a new Event, `patch` Event `name` to `count`, or nothing."""

    action: str  # "create", "patch" or "skip"
    key: tuple[str, ...]
    message: str
    count: int = 1
    name: str | None = None
    first: float = 0.0


@dataclass
class EventSeries:
    series: OrderedDict[tuple[str, ...], _Series] = field(default_factory=OrderedDict)
    # (object, type, reason) -> times distinct messages were first seen in the window
    similar: dict[tuple[str, ...], list[float]] = field(default_factory=dict)
    written: dict[tuple[str, ...], float] = field(default_factory=dict)  # last write per group

    def decide(self, obj: str, type_: str, reason: str, message: str, now: float) -> Decision:
        """`obj`: the involved object's identity (namespace/kind/name/uid)."""
        group = (obj, type_, reason)
        key = (*group, message)
        seen = [t for t in self.similar.get(group, []) if now - t < WINDOW_SECONDS]
        if len(seen) >= SIMILAR_AFTER:  # every later one, repeat or not, goes to one object
            key, message = (*group, COMBINED), COMBINED + message
        elif self._live(key, now) is None:
            self.similar[group] = [*seen, now]
        found = self._live(key, now)
        if found is None or found.name is None:
            self._remember(key, _Series(first=now, count=1))
            self.written[group] = now
            return Decision("create", key, message, 1, None, now)
        found.count += 1
        self.series.move_to_end(key)
        # One patch per FLUSH_SECONDS per object and reason, however many series it has.
        if now - self.written.get(group, float("-inf")) < FLUSH_SECONDS:
            return Decision("skip", key, message, found.count, found.name, found.first)
        self.written[group] = now
        return Decision("patch", key, message, found.count, found.name, found.first)

    def wrote(self, decision: Decision, name: str | None) -> None:
        """After the write: the created object's name; None forgets the series (the write
        failed, or the object was gone: the next occurrence creates it again)."""
        if name is None:
            self.series.pop(decision.key, None)
        elif (found := self.series.get(decision.key)) is not None:
            found.name = name

    def _live(self, key: tuple[str, ...], now: float) -> _Series | None:
        found = self.series.get(key)
        if found is not None and now - found.first >= WINDOW_SECONDS:
            del self.series[key]
            return None
        return found

    def _remember(self, key: tuple[str, ...], series: _Series) -> None:
        self.series[key] = series
        self.series.move_to_end(key)
        while len(self.series) > MAX_KEYS:
            self.series.popitem(last=False)
        for groups in (self.similar, self.written):
            if len(groups) > MAX_KEYS:
                groups.pop(next(iter(groups)))
