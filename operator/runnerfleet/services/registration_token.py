"""Runner registration tokens shared across the fleet: one per installation and scope an hour.

A registration token (a REST request counted against the installation's hourly limit) is
what the Actions service trades for an admin token. Fetched by every process, that is one
counted request an hour per listener plus the operator, growing with teams. Instead:
- the operator keeps one token per (registration scope, credentials) in `TokenCache`,
  reuses it while it has more than 20 min left, and fetches one at a time (concurrent callers
  share the fetch in flight); its own Actions-service clients draw from it;
- it hands the token to each TeamListener through a Secret (services/team_listener.py);
- the listener's `SharedRegistrationToken` reads that Secret whenever its Actions-service
  client needs a token and falls back to fetching one itself when the Secret is missing,
  unreadable or about to expire (logging once why).

The token never appears in logs, exceptions or reprs here.

Layer: services. I/O through the gateways (the Kubernetes API; GitHub via the caller's fetch).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field

from runnerfleet.gateways.kubernetes import KubeError, KubeGateway, NotFoundError
from runnerfleet.models.team_listener import TeamListenerSpec
from runnerfleet.planning.team_listener import OPERATOR_MARGIN, SharedToken, shared_token

log = logging.getLogger("runnerfleet.registration")

Token = tuple[str, float]  # (registration token, expiry in epoch seconds)
TokenSource = Callable[[], Awaitable[Token]]
# The operator's token for a TeamListener: (namespace, spec) -> the installation's token.
ListenerTokens = Callable[[str, TeamListenerSpec], Awaitable[Token]]
FAILURE_BACKOFF = 30.0  # a failed fetch is not retried for this long (callers share it)


@dataclass
class _Held:
    token: str = field(repr=False)
    expires_at: float


@dataclass
class TokenCache:
    """Registration tokens by key (scope + credentials, without the secret), one fetch at a
    time per key. Reused while more than `margin` seconds are left; a failure is remembered
    for `failure_backoff` seconds so a broken installation costs one request, not one per
    caller."""

    margin: float = OPERATOR_MARGIN
    failure_backoff: float = FAILURE_BACKOFF
    clock: Callable[[], float] = time.time
    fetches: int = 0  # how many times a token was actually fetched (tests, metrics)
    _held: dict[Hashable, _Held] = field(default_factory=dict)
    _inflight: dict[Hashable, asyncio.Task[Token]] = field(default_factory=dict)
    _failed: dict[Hashable, tuple[float, BaseException]] = field(default_factory=dict)

    async def get(self, key: Hashable, fetch: TokenSource) -> Token:
        now = self.clock()
        held = self._held.get(key)
        if held is not None and held.expires_at - now > self.margin:
            return held.token, held.expires_at
        failed = self._failed.get(key)
        if failed is not None and now < failed[0]:
            raise failed[1]
        task = self._inflight.get(key)
        if task is None:
            task = self._inflight[key] = asyncio.ensure_future(self._fetch(key, fetch))
        # shield: a caller cancelled mid-fetch does not cancel the fetch the others wait on.
        return await asyncio.shield(task)

    async def _fetch(self, key: Hashable, fetch: TokenSource) -> Token:
        try:
            self.fetches += 1
            token, expires_at = await fetch()
        except Exception as err:
            self._failed[key] = (self.clock() + self.failure_backoff, err)
            raise
        finally:
            self._inflight.pop(key, None)
        self._failed.pop(key, None)
        self._held[key] = _Held(token, expires_at)
        return token, expires_at

    def forget_failure(self, key: Hashable) -> None:
        """New credentials for `key` (a rotated App key): the old ones' failure says nothing
        about them, so the next caller fetches at once."""
        self._failed.pop(key, None)


class SharedRegistrationToken:
    """The listener's registration-token source: the operator's token from the listener's
    Secret, else `fallback` (a REST fetch of its own). Call it like `fallback`."""

    def __init__(
        self,
        kube: KubeGateway,
        namespace: str,
        secret_name: str,
        fallback: TokenSource,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._kube = kube
        self._namespace = namespace
        self._secret = secret_name
        self._fallback = fallback
        self._clock = clock
        self._last_why: str | None = None  # the reason last logged (log once per reason)
        self.shared = 0  # tokens taken from the Secret
        self.fetched = 0  # tokens fetched from GitHub instead

    def __repr__(self) -> str:
        return f"SharedRegistrationToken({self._namespace}/{self._secret})"

    async def __call__(self) -> Token:
        choice = await self._read()
        if choice.token is not None:
            if self._last_why is not None:
                log.info("registration token: using the operator's shared token again")
            self._last_why = None
            self.shared += 1
            return choice.token, choice.expires_at
        if choice.why != self._last_why:
            log.info("registration token: fetching one from GitHub: %s", choice.why)
            self._last_why = choice.why
        self.fetched += 1
        return await self._fallback()

    async def _read(self) -> SharedToken:
        try:
            data = await self._kube.read_secret_data(self._namespace, self._secret)
        except NotFoundError:
            data = None
        except KubeError as err:
            # The error names the Secret and the apiserver's reason, never its contents.
            return SharedToken(why=f"the registration Secret is unreadable: {err}")
        return shared_token(data, self._clock())
