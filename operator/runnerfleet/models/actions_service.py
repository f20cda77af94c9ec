"""The Actions service's runner scale-set wire format (JSON field names exactly as GitHub sends).

This is the contract between the client gateway (gateways/actions_service.py), which parses
every response with these models, and the fake Actions service (sim/actions_service.py), whose
responses the contract tests validate with them. Field names and shapes follow GitHub's own Go
client (actions/scaleset, types.go); unknown fields are ignored, as GitHub adds fields freely.

Layer: models. Pure.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

API_VERSION = "6.0-preview"
SCALE_SETS_PATH = "_apis/runtime/runnerscalesets"
RUNNER_GROUPS_PATH = "_apis/runtime/runnergroups/"
AGENTS_PATH = "_apis/distributedtask/pools/0/agents"
MAX_CAPACITY_HEADER = "X-ScaleSetMaxCapacity"
MESSAGE_TYPE_JOB_MESSAGES = "RunnerScaleSetJobMessages"
MAX_MESSAGES_PER_RESPONSE = 50

# `typeKey` values of the errors the protocol's callers must tell apart.
SESSION_CONFLICT = "RunnerScaleSetSessionConflictException"  # 409 on session create
JOB_STILL_RUNNING = "JobStillRunningException"  # 400 on agent delete: keep the runner
AGENT_EXISTS = "AgentExistsException"  # 409 on generatejitconfig: the name is taken
NOT_FOUND_KEYS = ("RunnerScaleSetNotFoundException", "AgentNotFoundException")


class Wire(BaseModel):
    """Base: populate by the wire name, ignore fields this version does not know."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class RegistrationToken(Wire):
    """`POST {api}/orgs/{org}/actions/runners/registration-token` (201); REST, rate-limited."""

    token: str
    expires_at: datetime


class RunnerRegistration(Wire):
    """`POST {api}/actions/runner-registration` with `RemoteAuth <registration token>`.

    `url` is the Actions service base URL; `token` the admin JWT (Bearer) for it.
    """

    url: str
    token: str
    token_schema: str | None = None


class ActionsError(Wire):
    """Error body of the Actions service (`typeKey` tells the exception apart)."""

    message: str = ""
    type_name: str = Field("", alias="typeName")
    type_key: str = Field("", alias="typeKey")
    error_code: int = Field(0, alias="errorCode")


class Label(Wire):
    name: str
    type: str = "System"


class RunnerGroup(Wire):
    id: int
    name: str
    size: int = 0
    is_default: bool = Field(False, alias="isDefaultGroup")


class RunnerGroupList(Wire):
    count: int
    value: list[RunnerGroup]


class RunnerSetting(Wire):
    ephemeral: bool = False
    is_elastic: bool = Field(False, alias="isElastic")
    disable_update: bool = Field(False, alias="disableUpdate")


class Statistics(Wire):
    """Sent with every session and message. Scale on `totalAssignedJobs` (includes running)."""

    total_available_jobs: int = Field(0, alias="totalAvailableJobs")
    total_acquired_jobs: int = Field(0, alias="totalAcquiredJobs")
    total_assigned_jobs: int = Field(0, alias="totalAssignedJobs")
    total_running_jobs: int = Field(0, alias="totalRunningJobs")
    total_registered_runners: int = Field(0, alias="totalRegisteredRunners")
    total_busy_runners: int = Field(0, alias="totalBusyRunners")
    total_idle_runners: int = Field(0, alias="totalIdleRunners")


class RunnerScaleSet(Wire):
    """A scale set. Create with POST (200), update with PATCH (200), DELETE answers 204."""

    id: int = 0
    name: str = ""
    runner_group_id: int = Field(0, alias="runnerGroupId")
    runner_group_name: str = Field("", alias="runnerGroupName")
    labels: list[Label] = Field(default_factory=list)
    runner_setting: RunnerSetting = Field(default_factory=RunnerSetting, alias="RunnerSetting")
    created_on: datetime | None = Field(None, alias="createdOn")
    runner_jit_config_url: str = Field("", alias="runnerJitConfigUrl")
    statistics: Statistics | None = None


class RunnerScaleSetList(Wire):
    count: int
    value: list[RunnerScaleSet]


class Session(Wire):
    """`POST runnerscalesets/{id}/sessions` {ownerName} → 200; PATCH refreshes the queue token."""

    session_id: str = Field(alias="sessionId")
    owner_name: str = Field("", alias="ownerName")
    runner_scale_set: RunnerScaleSet | None = Field(None, alias="runnerScaleSet")
    message_queue_url: str = Field(alias="messageQueueUrl")
    message_queue_access_token: str = Field(alias="messageQueueAccessToken")
    statistics: Statistics | None = None


class Message(Wire):
    """`GET {messageQueueUrl}?lastMessageId=N` → 200 (202 with no body: nothing new).

    `body` is a JSON array *in a string* of at most 50 job messages (JobMessage).
    """

    message_id: int = Field(alias="messageId")
    message_type: str = Field(alias="messageType")
    body: str = ""
    statistics: Statistics | None = None


JobMessageType = Literal["JobAvailable", "JobAssigned", "JobStarted", "JobCompleted"]


class JobMessage(Wire):
    """One element of a Message body. Fields unused by a type are absent or zero."""

    message_type: JobMessageType = Field(alias="messageType")
    runner_request_id: int = Field(alias="runnerRequestId")
    repository_name: str = Field("", alias="repositoryName")
    owner_name: str = Field("", alias="ownerName")
    job_id: str = Field("", alias="jobId")
    job_workflow_ref: str = Field("", alias="jobWorkflowRef")
    job_display_name: str = Field("", alias="jobDisplayName")
    workflow_run_id: int = Field(0, alias="workflowRunId")
    event_name: str = Field("", alias="eventName")
    request_labels: list[str] = Field(default_factory=list, alias="requestLabels")
    queue_time: datetime | None = Field(None, alias="queueTime")
    scale_set_assign_time: datetime | None = Field(None, alias="scaleSetAssignTime")
    runner_assign_time: datetime | None = Field(None, alias="runnerAssignTime")
    finish_time: datetime | None = Field(None, alias="finishTime")
    acquire_job_url: str = Field("", alias="acquireJobUrl")  # JobAvailable only
    runner_id: int = Field(0, alias="runnerId")  # JobStarted, JobCompleted
    runner_name: str = Field("", alias="runnerName")  # JobStarted, JobCompleted
    result: str = ""  # JobCompleted: succeeded, failed, canceled, ...


class AcquireJobsResult(Wire):
    """`POST runnerscalesets/{id}/acquirejobs` (queue token) body: [runnerRequestId, ...]."""

    count: int
    value: list[int]


class JitRunnerSetting(Wire):
    """Body of `POST runnerscalesets/{id}/generatejitconfig`."""

    name: str
    work_folder: str = Field("_work", alias="workFolder")


class RunnerReference(Wire):
    """A runner (agent) registered through a scale set."""

    id: int
    name: str
    runner_scale_set_id: int = Field(0, alias="runnerScaleSetId")
    status: str | None = None  # "online" / "offline" when the service says
    busy: bool | None = None


class RunnerReferenceList(Wire):
    count: int
    value: list[RunnerReference]


class JitRunnerConfig(Wire):
    """generatejitconfig → 200: the runner and its base64 JIT config (a secret)."""

    runner: RunnerReference
    encoded_jit_config: str = Field(alias="encodedJITConfig")
