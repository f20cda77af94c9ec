"""The operator's process-wide state: gateways, GitHub budgets and books, wake-ups, mode.

One `Runtime` per operator process, built once at start-up by the handlers and passed to every
service. It owns what must be shared for the fleet to scale:
- one GitHub `Budget` and one connection pool per set of credentials (an App installation or a
  token), drawn from by every scale set on it;
- one gateway and one `RegistrationBook` (the shared runner sweep) per registration scope;
- one runner registration token per registration scope and credentials (`TokenCache`),
  used by the operator's Actions-service clients and handed to every TeamListener's listener
  (services/registration_token.py), so the fleet fetches about one an hour, not one per process;
- the wake-up events of every object's loop. They are set only from the event loop's thread
  (kopf runs our handlers as coroutines), and `wake_runners` maps runner names that changed
  in a sweep back to the loops of their scale sets.

Layer: services.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from runnerfleet import conventions as c
from runnerfleet.gateways.actions_service import ActionsServiceClient
from runnerfleet.gateways.github import GitHubAuthError, GitHubGateway
from runnerfleet.gateways.github_budget import WRITE_POINTS_PER_WINDOW, Budget, MeteredTransport
from runnerfleet.gateways.informer import Informer
from runnerfleet.gateways.kubernetes import KubeGateway
from runnerfleet.metrics import OperatorMetrics
from runnerfleet.models.github import GitHubCredentials, GitHubTarget, parse_config_url
from runnerfleet.models.team_listener import TeamListenerSpec
from runnerfleet.planning.children import Applied
from runnerfleet.services.registration_token import Token, TokenCache, TokenSource
from runnerfleet.services.registrations import Registrar, RegistrationBook, SweepSettings
from runnerfleet.services.scale_set_protocol import ScaleSetRegistrar

CREDENTIALS_TTL = 300.0  # as scale sets: a credentials Secret is re-read at most this often
GatewayFactory = Callable[[GitHubTarget, GitHubCredentials, MeteredTransport], GitHubGateway]


def _default_gateway(
    target: GitHubTarget, credentials: GitHubCredentials, transport: MeteredTransport
) -> GitHubGateway:
    return GitHubGateway(target, credentials, transport=transport)


def sweep_settings_from_env() -> SweepSettings:
    """Sweep pacing; the defaults suit production, tests shorten them."""
    default = SweepSettings()
    return SweepSettings(
        min_interval=float(os.environ.get("RUNNERFLEET_SWEEP_MIN_SECONDS", default.min_interval)),
        max_interval=float(os.environ.get("RUNNERFLEET_SWEEP_MAX_SECONDS", default.max_interval)),
        budget_share=float(os.environ.get("RUNNERFLEET_SWEEP_SHARE", default.budget_share)),
    )


def listener_secrets_check_from_env() -> float:
    """Seconds between reads of the Secrets listener pods take as env (RUNNERFLEET_LISTENER_
    SECRETS_CHECK_SECONDS, default CREDENTIALS_TTL): a rotation rolls the pods this soon."""
    return float(os.environ.get("RUNNERFLEET_LISTENER_SECRETS_CHECK_SECONDS", CREDENTIALS_TTL))


def write_points_from_env() -> int:
    """Points a minute per endpoint our writes may spend (GitHub allows 900; a GHES admin may
    set another limit, and other clients of the App need room too)."""
    return int(
        os.environ.get("RUNNERFLEET_GITHUB_WRITE_POINTS_PER_MINUTE", WRITE_POINTS_PER_WINDOW)
    )


@dataclass
class RegistrationQueue:
    """Scale sets waiting for JIT registration slots under GitHub's secondary limit, first
    come first served: when slots free, only as many waiters are woken as there are slots
    (waking them all would cost a round each for one slot)."""

    gateway: Registrar
    wake: Callable[[str, str], None]
    waiting: dict[tuple[str, str], None] = field(default_factory=dict)  # insertion-ordered
    _timer: asyncio.TimerHandle | None = None

    def wait(self, namespace: str, name: str) -> None:
        self.waiting.setdefault((namespace, name), None)
        if self._timer is None:
            self._arm()

    def _arm(self) -> None:
        delay = max(0.0, self.gateway.jit_free_at() - time.time()) + 0.05
        self._timer = asyncio.get_running_loop().call_later(delay, self._grant)

    def _grant(self) -> None:
        self._timer = None
        for _ in range(max(1, self.gateway.jit_writes_available())):
            if not self.waiting:
                return
            key = next(iter(self.waiting))
            del self.waiting[key]
            self.wake(*key)
        if self.waiting:
            self._arm()


@dataclass
class GitHubSide:
    """What one registration scope needs: its gateway, its shared book and its queue for
    registration slots."""

    gateway: Registrar
    book: RegistrationBook
    secret_hash: int  # the credentials it was made with; a rotated Secret gets a new side
    registrations: RegistrationQueue


def credentials_fingerprint(credentials: GitHubCredentials) -> int:
    """Changes when the secret does (a rotated App key, a new token); not the secret."""
    return hash((credentials.token, credentials.app_id, credentials.private_key))


def credentials_key(credentials: GitHubCredentials) -> str:
    """Which budget credentials draw from (an installation, or a token), without the secret."""
    if credentials.token:
        return f"token:{hash(credentials.token):x}"
    return f"app:{credentials.app_id}:{credentials.installation_id}"


RUNNER_CHILDREN = f"{c.LABEL_MANAGED_BY}={c.MANAGED_BY_VALUE},{c.LABEL_SCALE_SET}"
LISTENER_DEPLOYMENTS = (
    f"{c.LABEL_MANAGED_BY}={c.MANAGED_BY_VALUE},{c.LABEL_COMPONENT}={c.COMPONENT_LISTENER}"
)


@dataclass
class Children:
    """Every scale set's runner pods and Secrets, from one informer per kind (and served
    namespace), written through by the executor so a round sees its own creations at once."""

    pods: list[Informer]
    secrets: list[Informer]
    deployments: list[Informer] = field(default_factory=list)  # TeamListeners' Deployments

    @staticmethod
    def _pick(informers: list[Informer], namespace: str) -> Informer:
        for informer in informers:
            if informer.namespace in (None, namespace):
                return informer
        raise LookupError(f"namespace {namespace} is not served")

    async def of(
        self, namespace: str, labels: dict[str, str]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        pods, secrets = self._pick(self.pods, namespace), self._pick(self.secrets, namespace)
        await pods.synced.wait()
        await secrets.synced.wait()
        return pods.items(namespace, labels), secrets.items(namespace, labels)

    def wrote(self, obj: dict[str, Any]) -> None:
        ns = obj["metadata"]["namespace"]
        group = self.pods if obj.get("kind") == "Pod" else self.secrets
        self._pick(group, ns).upsert(obj)

    def deleted(self, kind: str, namespace: str, name: str) -> None:
        group = self.pods if kind == "Pod" else self.secrets
        self._pick(group, namespace).remove(namespace, name)

    async def deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        informer = self._pick(self.deployments, namespace)
        await informer.synced.wait()
        return informer.get(namespace, name)

    def start(self) -> None:
        for informer in (*self.pods, *self.secrets, *self.deployments):
            informer.start()

    def synced(self) -> bool:
        """Every informer has listed once (its cache is complete)."""
        return all(i.synced.is_set() for i in (*self.pods, *self.secrets, *self.deployments))

    async def wait_synced(self) -> tuple[int, int]:
        """Wait until every informer has listed; returns (runner pods, runner Secrets)."""
        for informer in (*self.pods, *self.secrets, *self.deployments):
            await informer.synced.wait()
        return sum(len(i) for i in self.pods), sum(len(i) for i in self.secrets)

    async def stop(self) -> None:
        for informer in (*self.pods, *self.secrets, *self.deployments):
            await informer.stop()


@dataclass
class Runtime:
    """Process-wide state shared by every object's loop."""

    kube: KubeGateway
    gateway_factory: GatewayFactory = _default_gateway
    sweep: SweepSettings = field(default_factory=sweep_settings_from_env)
    listener_secrets_check: float = field(default_factory=listener_secrets_check_from_env)
    write_points_per_minute: int = field(default_factory=write_points_from_env)
    wakeups: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)
    listener_wakeups: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)
    pool_wakeups: dict[str, asyncio.Event] = field(default_factory=dict)
    mode: str = c.MODE_ACTIVE  # c.MODE_STANDBY: a global suspend (blue/green)
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics.create)
    children: Children | None = None  # None: rounds list from the apiserver (service tests)
    # Rounds running at once, across every scale set: a sweep or a re-list that wakes a
    # thousand loops together runs them through this many slots, not all at once.
    round_slots: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(
            int(os.environ.get("RUNNERFLEET_ROUND_SLOTS", 32))
        )
    )
    # What each scale set's status was last written as (fresher than a watch may have shown).
    written: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # containerMode kubernetes: the hooks RBAC last applied per scale set, and the refusal
    # standing for it (services/container_mode.py).
    hooks_applied: dict[tuple[str, str], tuple[Applied, str | None]] = field(default_factory=dict)
    _reads: dict[tuple[str, ...], tuple[float, Any]] = field(default_factory=dict)
    _transports: dict[str, MeteredTransport] = field(default_factory=dict)
    _sides: dict[tuple[str, str], GitHubSide] = field(default_factory=dict)
    # Scale-set protocol: one Actions-service client per (config URL, credentials), a REST
    # gateway per installation only for its registration tokens (no sweep), and one side
    # per RunnerScaleSet (its GitHub scale set is its registration scope).
    _actions: dict[tuple[str, str], ActionsServiceClient] = field(default_factory=dict)
    # (fingerprint of the credentials it was made with, gateway), and the newest credentials
    # seen per key: a rotated key gets a new gateway at the next fetch.
    _rest: dict[tuple[str, str], tuple[int, GitHubGateway]] = field(default_factory=dict)
    _credentials: dict[tuple[str, str], GitHubCredentials] = field(default_factory=dict)
    registration_tokens: TokenCache = field(default_factory=TokenCache)
    _retired: set[asyncio.Task[None]] = field(default_factory=set)

    def wake(self, namespace: str, name: str) -> None:
        self.wakeups.setdefault((namespace, name), asyncio.Event()).set()

    def ready(self) -> bool:
        """The runner caches are complete (a standby is ready to take over)."""
        return self.children is None or self.children.synced()

    def forget_wakeups(self) -> None:
        """Drop the wake-ups set while standing by (caches follow changes before leading):
        every loop runs a first round when it starts anyway, and a wake-up already set would
        start a settled set's first round at once, undoing the startup spread."""
        for event in (
            *self.wakeups.values(),
            *self.listener_wakeups.values(),
            *self.pool_wakeups.values(),
        ):
            event.clear()

    def wake_runners(self, names: set[str]) -> None:
        """Wake the loops of the scale sets these runner names belong to."""
        owners = {owner for name in names if (owner := c.runner_owner(name)) is not None}
        for namespace, scale_set in list(self.wakeups):
            if (scale_set, c.namespace_tag(namespace)) in owners:
                self.wakeups[(namespace, scale_set)].set()

    def watch_children(self, namespaces: list[str | None]) -> None:
        """Start the runner pod and Secret informers (one each per served namespace, or one
        cluster-wide); every change wakes the loop of the scale set it belongs to."""

        def wake_owner(obj: dict[str, Any]) -> None:
            meta = obj.get("metadata", {})
            owner = (meta.get("labels") or {}).get(c.LABEL_SCALE_SET)
            if owner:
                self.wake(meta.get("namespace", ""), owner)

        def wake_listener(obj: dict[str, Any]) -> None:
            meta = obj.get("metadata", {})
            owner = (meta.get("labels") or {}).get(c.LABEL_LISTENER)
            if owner:
                key = (meta.get("namespace", ""), owner)
                self.listener_wakeups.setdefault(key, asyncio.Event()).set()

        def make(plural: str) -> list[Informer]:
            return [
                Informer(self.kube, plural, ns, RUNNER_CHILDREN, wake_owner, quiet_first_list=True)
                for ns in namespaces
            ]

        deployments = [
            Informer(self.kube, "deployments", ns, LISTENER_DEPLOYMENTS, wake_listener)
            for ns in namespaces
        ]
        self.children = Children(make("pods"), make("secrets"), deployments)
        self.children.start()

    async def cached(
        self, key: tuple[str, ...], ttl: float, fetch: Callable[[], Awaitable[Any]]
    ) -> Any:
        """`fetch()`, reused for `ttl` seconds by every caller asking for `key` (a credentials
        Secret many scale sets share, a node pool). Failures are never cached."""
        hit = self._reads.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[0] < ttl:
            return hit[1]
        value = await fetch()
        self._reads[key] = (now, value)
        return value

    async def secrets_hash(self, namespace: str, names: Sequence[str]) -> str:
        """A digest of these Secrets' data, read through the same cache as credentials (at
        most every `listener_secrets_check` s, shared with the scale sets naming them): it
        changes when any of them does and reveals nothing of them (SHA-256, truncated).
        Raises KubeError or NotFoundError when one cannot be read."""
        digest = hashlib.sha256()
        for name in sorted(set(names)):
            data = await self.cached(
                ("secret", namespace, name), self.listener_secrets_check,
                functools.partial(self.kube.read_secret_data, namespace, name),
            )  # fmt: skip
            digest.update(json.dumps([name, sorted(data.items())]).encode())
        return digest.hexdigest()[:16]

    def forget(self, key: tuple[str, ...]) -> None:
        """Drop a cached read: the next caller fetches it again."""
        self._reads.pop(key, None)

    def budget(self, credentials: GitHubCredentials) -> Budget:
        return self._transport(credentials).budget

    def _transport(self, credentials: GitHubCredentials) -> MeteredTransport:
        key = credentials_key(credentials)
        if key not in self._transports:
            budget = Budget(points_per_window=self.write_points_per_minute)
            self._transports[key] = MeteredTransport(budget)
        return self._transports[key]

    def github(self, target: GitHubTarget, credentials: GitHubCredentials) -> GitHubSide:
        """The scope's gateway and book, made (and its sweep started) on first use."""
        key = (target.key, credentials_key(credentials))
        return self._side(
            key, credentials,
            lambda: self.gateway_factory(target, credentials, self._transport(credentials)),
        )  # fmt: skip

    def scale_set_side(
        self,
        target: GitHubTarget,
        credentials: GitHubCredentials,
        config_url: str,
        namespace: str,
        name: str,
    ) -> GitHubSide:
        """The side of one RunnerScaleSet on the scale-set protocol: its registrar (the
        GitHub scale set) and a book that reads only its own runners' agents."""
        key = (f"{target.key}|scaleset|{namespace}/{name}", credentials_key(credentials))

        def make() -> Registrar:
            client = self.actions_client(target, credentials, config_url)
            return ScaleSetRegistrar(
                client, target, self.budget(credentials), c.github_scale_set_name(name, namespace)
            )

        return self._side(key, credentials, make)

    def drop_scale_set_side(
        self, target: GitHubTarget, credentials: GitHubCredentials, namespace: str, name: str
    ) -> None:
        key = (f"{target.key}|scaleset|{namespace}/{name}", credentials_key(credentials))
        side = self._sides.pop(key, None)
        if side is not None:
            self._retire(side)

    def actions_client(
        self, target: GitHubTarget, credentials: GitHubCredentials, config_url: str
    ) -> ActionsServiceClient:
        """One Actions-service client (admin token, connection pool) per installation and
        config URL; its registration tokens come from the shared cache."""
        key = (config_url.rstrip("/").lower(), credentials_key(credentials))
        tokens = self.registration_token(target, credentials)  # notes rotated credentials
        client = self._actions.get(key)
        if client is None:
            client = self._actions[key] = ActionsServiceClient(config_url, tokens)
        return client

    def registration_token(
        self, target: GitHubTarget, credentials: GitHubCredentials
    ) -> TokenSource:
        """The scope's registration token from the shared cache; a fetch is a REST request
        through the installation's budget, made by a gateway kept only for that."""
        key = (target.key, credentials_key(credentials))
        known = self._credentials.get(key)
        if known is not None and credentials_fingerprint(known) != credentials_fingerprint(
            credentials
        ):
            self.registration_tokens.forget_failure(key)  # the old key's 401 is not the new's
        self._credentials[key] = credentials  # the newest: every caller reads its Secret

        async def fetch() -> Token:
            return await self._rest_gateway(target, key).registration_token()

        return lambda: self.registration_tokens.get(key, fetch)

    def _rest_gateway(self, target: GitHubTarget, key: tuple[str, str]) -> GitHubGateway:
        """The scope's REST gateway for registration tokens, made again when its credentials
        changed. Made once, it kept a rotated-out App key for good: an hour on, its next
        installation token was refused (401) once that key was deleted, and so was every
        registration token after, until the operator restarted."""
        credentials = self._credentials[key]
        fingerprint = credentials_fingerprint(credentials)
        held = self._rest.get(key)
        if held is None or held[0] != fingerprint:
            gateway = GitHubGateway(target, credentials, transport=self._transport(credentials))
            held = self._rest[key] = (fingerprint, gateway)
        return held[1]

    async def listener_registration_token(self, namespace: str, spec: TeamListenerSpec) -> Token:
        """The token for a TeamListener's scope and credentials (its secretRef, read at most
        every 5 min and shared with the scale sets naming the same Secret). Credentials
        GitHub refuses are read again at once and tried once more: the Secret may hold a
        rotated App key, and the old one may be deleted already."""
        try:
            return await self._listener_token(namespace, spec)
        except GitHubAuthError:
            self.forget(("secret", namespace, spec.github.secret_ref.name))
            return await self._listener_token(namespace, spec)

    async def _listener_token(self, namespace: str, spec: TeamListenerSpec) -> Token:
        secret = spec.github.secret_ref.name
        data = await self.cached(
            ("secret", namespace, secret), CREDENTIALS_TTL,
            lambda: self.kube.read_secret_data(namespace, secret),
        )  # fmt: skip
        credentials = GitHubCredentials.from_secret_data(secret, data)
        target = parse_config_url(spec.github.config_url)
        return await self.registration_token(target, credentials)()

    def _side(
        self, key: tuple[str, str], credentials: GitHubCredentials, make: Callable[[], Registrar]
    ) -> GitHubSide:
        secret_hash = credentials_fingerprint(credentials)
        side = self._sides.get(key)
        if side is not None and side.secret_hash != secret_hash:
            self._retire(side)  # credentials rotated
            side = None
        if side is None:
            gateway = make()
            book = RegistrationBook(gateway, self.sweep, on_change=self.wake_runners)
            queue = RegistrationQueue(gateway, self.wake)
            side = self._sides[key] = GitHubSide(gateway, book, secret_hash, queue)
            book.start()
        return side

    def _retire(self, side: GitHubSide) -> None:
        task = asyncio.create_task(side.book.stop())
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    async def close(self) -> None:
        if self.children is not None:
            await self.children.stop()
        for side in self._sides.values():
            await side.book.stop()
        for client in self._actions.values():
            await client.close()
        for transport in self._transports.values():
            await transport.close()
        await self.kube.api.close()
