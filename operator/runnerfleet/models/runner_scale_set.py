"""RunnerScaleSet: a pool of one-job runner pods with a shared label set, for one team.

Mirrors crds/runnerscalesets.runnerfleet.dev.yaml (generated from this module by
`make crds`; a unit test fails on drift).

Layer: models. Pure.
"""

from __future__ import annotations

import zoneinfo
from typing import Any, Final, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from runnerfleet.models.base import Condition, CrdModel, Duration, SecretKeyRef

GITHUB_URL_PATTERN: Final = (
    r"^https?://[A-Za-z0-9.-]+(:[0-9]+)?/"
    r"((enterprises/[A-Za-z0-9_.-]+)|([A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)?))/?$"
)


class GitHubConfig(CrdModel):
    """Where runners register, and the credentials to register them."""

    config_url: str = Field(
        pattern=GITHUB_URL_PATTERN,
        description=(
            "Organisation (https://github.com/ORG), repository (https://github.com/ORG/REPO) or "
            "enterprise (https://github.com/enterprises/SLUG) URL; any other host is a GitHub "
            "Enterprise Server whose API is at https://HOST/api/v3."
        ),
    )
    secret_ref: SecretKeyRef = Field(
        description=(
            "Secret with either `github_app_id`, `github_app_installation_id` and "
            "`github_app_private_key`, or `github_token`."
        )
    )
    # At most 255: a longer name made GitHub's lookup fail, and deletion waited forever.
    runner_group: str = Field(
        default="Default",
        min_length=1,
        max_length=255,
        description="Runner group the runners join.",
    )
    protocol: Literal["scaleSet", "rest"] = Field(
        default="scaleSet",
        description=(
            "How demand is learned and runners registered: `scaleSet` registers this set as a "
            "GitHub runner scale set (Actions service: the team listener holds its message "
            "session, JIT configs and removals go to the scale set, none count against the "
            "REST rate limit; github.com, GHE.com, GHES >= 3.9); `rest` uses REST JIT "
            "registration and the listener's polling and webhooks."
        ),
    )


# Identity endpoints a scale set may open in its team's NetworkPolicy (docs/cloud-identity.md).
# Azure workload identity and EKS IRSA need none: they trade a projected token over HTTPS.
IdentityEgress = Literal["awsPodIdentity", "gkeMetadataServer"]


class CloudIdentity(CrdModel):
    """Cloud credentials the Kubernetes way: runner pods run as a ServiceAccount the platform
    team created (and annotated for IRSA, GKE or Azure workload identity)."""

    service_account_name: str = Field(
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description=(
            "ServiceAccount (in the scale set's namespace) the runner pods run as; not created "
            "by the operator. Until it exists no runner is created (condition "
            "PodsAdmitted=False, ServiceAccountNotFound)."
        ),
    )
    token_audience: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        description=(
            "Audience of a projected service-account token mounted in the runner container at "
            "/var/run/secrets/runnerfleet.dev/identity/token (env RUNNERFLEET_IDENTITY_TOKEN_"
            "FILE), e.g. sts.amazonaws.com or a workload identity pool provider. Unset: no "
            "token of our own (the clouds' webhooks inject theirs)."
        ),
    )
    token_expiration_seconds: int = Field(
        default=3600,
        ge=600,
        le=86400,
        description="Lifetime of the projected token; the kubelet renews it before it expires.",
    )
    egress: list[IdentityEgress] = Field(
        default_factory=list,
        max_length=2,
        description=(
            "Identity endpoints runner pods may reach, blocked by the team's NetworkPolicy "
            "otherwise: awsPodIdentity (EKS Pod Identity agent 169.254.170.23 and "
            "fd00:ec2::23, TCP 80), gkeMetadataServer (GKE metadata server 169.254.169.254 "
            "TCP 80, 169.254.169.252 TCP 988)."
        ),
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )


class Hardening(CrdModel):
    """Opt-in restrictions of the runner pod beyond the restricted profile it always has."""

    read_only_root_filesystem: bool = Field(
        default=False,
        description=(
            "Runner container with a read-only root filesystem. Writable emptyDirs: the work "
            "directory (/home/runner/_work, volume `work`), /tmp, and /home/runner itself, "
            "copied there from the image by an init container (the runner writes its JIT "
            "config files and _diag logs into its own directory)."
        ),
    )


class WorkVolumeClaim(CrdModel):
    """The per-runner ephemeral volume claim holding the work directory (kubernetes mode):
    the runner and the job pods the hooks create share it, so it is created with the runner
    pod and deleted with it."""

    storage_class_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="StorageClass of the claim (default: the cluster's default class).",
    )
    size: str = Field(
        default="1Gi",
        pattern=r"^[0-9]+(\.[0-9]+)?(k|Ki|M|Mi|G|Gi|T|Ti)?$",
        description="Requested storage (resources.requests.storage).",
    )
    access_modes: list[Literal["ReadWriteOnce", "ReadWriteOncePod", "ReadWriteMany"]] = Field(
        default=["ReadWriteOnce"],
        min_length=1,
        description=(
            "Access modes. ReadWriteOnce suffices: the hooks place job pods on the runner's node."
        ),
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )


class ContainerMode(CrdModel):
    """How jobs with `container:` or `services:` run (docs/container-modes.md)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.type == 'kubernetes' || !has(self.workVolumeClaim)",
                    "message": "spec.containerMode.workVolumeClaim applies only to type kubernetes",
                    "fieldPath": ".workVolumeClaim",
                    "reason": "FieldValueForbidden",
                },
                {
                    "rule": "self.type == 'kubernetes' || !has(self.requireJobContainer)",
                    "message": "spec.containerMode.requireJobContainer applies only to type "
                    "kubernetes",
                    "fieldPath": ".requireJobContainer",
                    "reason": "FieldValueForbidden",
                },
                {
                    "rule": "self.type == 'dind' || !has(self.dindImage)",
                    "message": "spec.containerMode.dindImage applies only to type dind",
                    "fieldPath": ".dindImage",
                    "reason": "FieldValueForbidden",
                },
            ]
        }
    )

    type: Literal["kubernetes", "dind"] = Field(
        description=(
            "`kubernetes`: GitHub's runner container hooks run each job container and service "
            "as a pod in this namespace (a per-scale-set ServiceAccount and Role are rendered). "
            "`dind`: a privileged Docker daemon beside the runner; only on a node pool with "
            "`allowPrivileged: true`."
        )
    )
    work_volume_claim: WorkVolumeClaim | None = Field(
        default=None,
        description="kubernetes: the work directory's per-runner claim (default 1Gi, RWO).",
    )
    require_job_container: bool | None = Field(
        default=None,
        description=(
            "kubernetes: refuse jobs without `container:` (default true, as ARC), so no job "
            "step runs inside the runner pod, which holds a token able to create pods."
        ),
    )
    dind_image: str | None = Field(
        default=None,
        min_length=1,
        description="dind: the Docker daemon's image (default docker:dind).",
    )


# issue 14 part 2 (warm pools): scheduled floors.
TIME_OF_DAY_PATTERN: Final = r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$"
Weekday = Literal["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
WEEKDAYS: Final[tuple[Weekday, ...]] = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


class ScheduledFloor(CrdModel):
    """A weekly time window with its own minimum of idle runners (wall-clock, in a zone)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.start != self.end",
                    "message": "a window's end must differ from its start (for all day use "
                    "00:00-23:59:59, or minRunners)",
                    "fieldPath": ".end",
                    "reason": "FieldValueInvalid",
                },
            ]
        }
    )

    name: str | None = Field(default=None, max_length=63, description="A label for people.")
    days: list[Weekday] = Field(
        default_factory=lambda: list(WEEKDAYS),
        min_length=1,
        max_length=7,
        description=(
            "Days on which the window starts (default: every day). A window whose end is "
            "earlier than its start runs past midnight into the next day."
        ),
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    start: str = Field(
        pattern=TIME_OF_DAY_PATTERN, max_length=8,
        description="Local start time, HH:MM or HH:MM:SS (inclusive).",
    )  # fmt: skip
    end: str = Field(
        pattern=TIME_OF_DAY_PATTERN, max_length=8,
        description="Local end time, HH:MM or HH:MM:SS (exclusive).",
    )  # fmt: skip
    time_zone: str = Field(
        default="UTC",
        min_length=1,
        max_length=64,
        description=(
            "IANA time zone of start and end (e.g. Europe/Berlin); daylight saving time is "
            "followed, so 09:00 stays 09:00 local all year."
        ),
    )
    min_runners: int = Field(ge=0, description="Idle runners kept warm while the window is active.")

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        # The apiserver cannot check a zone name; the round reports it as ConfigValid=False
        # naming spec.scheduledFloors[i].timeZone (and keeps the runners it has).
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"unknown IANA time zone {value!r}") from err
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> ScheduledFloor:
        # The CEL rule compares the texts; this also catches 09:00 vs 09:00:00.
        def seconds(text: str) -> str:
            return text if len(text) == 8 else text + ":00"

        if seconds(self.start) == seconds(self.end):
            raise ValueError(f"end {self.end} equals start {self.start}: an empty window")
        return self


class PredictiveWarm(CrdModel):
    """How many idle runners warmPolicy: predictive keeps (planning/forecast.py)."""

    target_percentile: float = Field(
        default=99.0,
        ge=50.0,
        le=99.9,
        description=(
            "Keep enough idle runners for this percentile of the jobs forecast to arrive "
            "within leadTime (Poisson, at the learnt rate of the hour of the week)."
        ),
    )
    lead_time: Duration = Field(
        default="2m",
        description=(
            "How far ahead to provide: about the time a new runner takes to start and "
            "register (pod scheduling, image pull, registration); twice that is safer "
            "(docs/warm-pools.md: bench/warm.py's results)."
        ),
    )


class RunnerScaleSetSpec(CrdModel):
    """Desired state of a RunnerScaleSet."""

    github: GitHubConfig = Field(description="GitHub registration target and credentials.")
    labels: list[str] = Field(
        min_length=1,
        max_length=100,
        description="Runner labels; a job runs here if its labels are a subset of these.",
        json_schema_extra={
            "items": {"type": "string", "minLength": 1, "maxLength": 256},
            "x-kubernetes-list-type": "set",
        },
    )
    min_runners: int = Field(default=0, ge=0, description="Idle runners kept warm.")
    # issue 14 part 2 (warm pools): one block.
    scheduled_floors: list[ScheduledFloor] | None = Field(
        default=None,
        max_length=20,
        description=(
            "Time windows that raise minRunners while they are active (e.g. working hours): "
            "the effective minimum is the largest of minRunners and the active windows' "
            "minRunners, never above maxRunners."
        ),
    )
    warm_policy: Literal["static", "predictive"] = Field(
        default="static",
        description=(
            "`static`: minRunners and scheduledFloors only. `predictive`: also keep the idle "
            "runners the jobs expected within the runner start-up lead time need (learnt by "
            "the team listener from this set's own arrivals, by hour of the week), within "
            "minRunners and maxRunners."
        ),
    )
    predictive: PredictiveWarm | None = Field(
        default=None, description="Settings of warmPolicy: predictive (defaults if unset)."
    )
    max_runners: int = Field(default=10, ge=0, description="Upper bound on runners of any state.")
    template: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Pod template (a PodTemplateSpec) for runner pods; the runner container is named "
            "`runner`. Defaults fill the image, command, security context and JIT config."
        ),
    )
    container_mode: ContainerMode | None = Field(
        default=None,
        description=(
            "How jobs with `container:` or `services:` run: unset (default) is the restricted "
            "runner with no API token; `kubernetes` (runner container hooks) or `dind`."
        ),
    )
    node_pool: str | None = Field(
        default=None, description="Name of the node pool runners are placed on."
    )
    # issue 13 items 6-7 (cloud identity, hardening): one block, nested models.
    identity: CloudIdentity | None = Field(
        default=None,
        description=(
            "Cloud identity: the ServiceAccount runner pods run as, an optional projected "
            "token, identity endpoints opened. Unset: no ServiceAccount token at all."
        ),
    )
    hardening: Hardening | None = Field(
        default=None, description="Opt-in hardening of the runner pod (unset: none)."
    )
    registration_timeout: Duration = Field(
        default="5m", description="A runner not online within this is replaced."
    )
    max_runner_age: Duration = Field(
        default="24h", description="Idle runners older than this are replaced."
    )
    max_job_duration: Duration = Field(
        default="24h",
        description=(
            "A runner busy longer than this (from when the operator first saw it busy) is "
            "removed with an Event, and GitHub fails its job: a hung job, or a runner GitHub "
            "lost track of. GitHub ends a job at its timeout-minutes (360 by default, at most "
            "5 days on self-hosted runners); set this above the longest you allow."
        ),
    )
    job_completion_grace: Duration = Field(
        default="2m",
        description=(
            "A runner whose job GitHub reports over while its pod still runs (the runner "
            "hangs on exit, a sidecar keeps the pod up) is removed after this."
        ),
    )
    keep_failed_runners_for: Duration = Field(
        default="10m", description="Failed runner pods are kept this long for inspection."
    )
    scale_down_delay: Duration = Field(
        default="30s", description="Demand must stay lower this long before scaling down."
    )
    suspend: bool = Field(
        default=False, description="Create no new runners; existing ones finish their jobs."
    )


class Demand(CrdModel):
    """What the team's listener last reported for this scale set (written only by it)."""

    assigned_jobs: int = Field(ge=0, description="Queued or running jobs matched to this set.")
    sequence: int = Field(ge=0, description="Monotonic report number; lower ones are ignored.")
    observed_at: str = Field(description="When the listener observed the queue (RFC 3339).")
    listener: str = Field(default="", description="Which listener reported it.")
    busy_runners: list[str] = Field(
        default_factory=list,
        max_length=1000,
        description=(
            "This set's runners GitHub reports running a job (workflow_job in_progress), "
            "as seen by the listener at observedAt."
        ),
    )
    # issue 14 part 2 (predictive warm pools): the listener's learnt arrival rates.
    arrivals: str | None = Field(
        default=None,
        max_length=1024,
        description=(
            "Learnt job arrival rates of this set by hour of the week (compact, versioned; "
            "planning/forecast.py), kept here so they survive listener restarts. Written "
            "with demand reports, only for warmPolicy: predictive."
        ),
    )
    # Queue depth (issue 13): the split of assignedJobs, for people and dashboards; the
    # planner scales on assignedJobs only. Absent in reports of older listeners.
    queued_jobs: int | None = Field(
        default=None, ge=0, description="Of assignedJobs, the jobs waiting for a runner."
    )
    running_jobs: int | None = Field(
        default=None, ge=0, description="Of assignedJobs, the jobs in progress on a runner."
    )


class RunnerScaleSetStatus(CrdModel):
    """Observed state of a RunnerScaleSet."""

    desired: int = Field(default=0, description="Runners wanted right now.")
    pending: int = Field(default=0, description="Runners created but not yet online.")
    idle: int = Field(default=0, description="Online runners waiting for a job.")
    busy: int = Field(default=0, description="Runners running a job.")
    failed: int = Field(default=0, description="Runners that failed recently (not counted).")
    updated: int | None = Field(
        default=None, description="Runners on the current template (templateHash)."
    )
    outdated: int | None = Field(
        default=None,
        description=(
            "Runners on an older template: idle and pending ones are being replaced, busy "
            "ones finish their job and are not reused."
        ),
    )
    template_hash: str | None = Field(
        default=None,
        description="Current runner template hash (pod label runnerfleet.dev/template-hash).",
    )
    observed_generation: int | None = Field(default=None, description="Spec generation seen.")
    last_scale_time: str | None = Field(default=None, description="Last scale up or down.")
    scale_down_pending_since: str | None = Field(
        default=None, description="Since when the desired count has been lower."
    )
    consecutive_failures: int = Field(default=0, description="Runner failures in a row.")
    last_failure_time: str | None = Field(
        default=None, description="When the last runner failed (backoff counts from here)."
    )
    last_failure_reason: str | None = Field(
        default=None, description="Why the last runner failed (e.g. OOMKilled)."
    )
    conditions: list[Condition] = Field(default_factory=list, description="Status conditions.")
    demand: Demand | None = Field(
        default=None, description="Demand contract: written by the team listener only."
    )
    kopf: dict[str, Any] = Field(
        default_factory=dict, description="Handler progress kept by kopf (internal)."
    )
