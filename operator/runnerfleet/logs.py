"""Log format and per-line context for the operator and listener processes.

`RUNNERFLEET_LOG_FORMAT` picks the format: `text` (the default: time, level, logger, message,
then `key=value` for each context field set) or `json` (one object per line: `time`, `level`,
`logger`, `message`, and the context fields set). The context fields are the scale set
(`namespace/name`), the runner and the job the line is about; they come from context
variables that the code binds around a scale-set round, a runner action or a job message
(`bind`, `context`), so a line logged anywhere below carries them without passing them on.
asyncio copies the context into each task it starts, so a binding made inside a task (a
scale set's loop, one executor step) never leaks into its siblings.

Nothing but those fields reaches a line: a record's `extra` dict is not copied (kopf puts its
settings there; a careless `extra={"token": ...}` must not reach the log either), and
values shaped like GitHub tokens or PEM private keys are masked in every message.

HTTP client libraries log one INFO line per request (httpx: "HTTP Request: ..."), and kopf
one per watch event handled ("Handler 'wake_on_change' succeeded."). Those are demoted to
DEBUG: shown with `--verbose`, dropped otherwise; failures surface through our own warnings.

Layer: bottom (beside conventions and metrics): imported by handlers, services, the listener
and the CLI. Pure but for `configure` (which installs the root handler) and `format_from_env`.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping
from typing import Any, TextIO

ENV_FORMAT = "RUNNERFLEET_LOG_FORMAT"
FORMAT_TEXT = "text"
FORMAT_JSON = "json"
FORMATS = (FORMAT_TEXT, FORMAT_JSON)

FIELDS = ("scale_set", "runner", "job")  # the context fields, in the order text shows them
_vars: dict[str, contextvars.ContextVar[str | None]] = {
    name: contextvars.ContextVar(f"runnerfleet_log_{name}", default=None) for name in FIELDS
}
# Loggers that write a line per HTTP request or per served request at INFO.
REQUEST_LOGGERS = ("httpx", "httpcore", "aiohttp.access", "hishel", "githubkit")

_configured = FORMAT_TEXT

# GitHub token prefixes (ghp_, gho_, ghu_, ghs_, ghr_, github_pat_) and PEM key bodies.
_SECRET = re.compile(
    r"\b(?:gh[pousr]_[A-Za-z0-9]{16,}|github_pat_[A-Za-z0-9_]{20,})"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
    re.DOTALL,
)


class LogFormatError(ValueError):
    """RUNNERFLEET_LOG_FORMAT has a value other than text or json (the message names it)."""


def parse_format(value: str | None) -> str:
    """`text` when unset or empty; raises LogFormatError naming the variable otherwise."""
    chosen = (value or FORMAT_TEXT).strip().lower()
    if chosen not in FORMATS:
        raise LogFormatError(f"{ENV_FORMAT} must be one of {'/'.join(FORMATS)}, not {value!r}")
    return chosen


def format_from_env(environ: Mapping[str, str] | None = None) -> str:
    return parse_format((os.environ if environ is None else environ).get(ENV_FORMAT))


def configured_format() -> str:
    """The format this process logs in (what `configure` installed): listener pods the
    operator renders are given the same."""
    return _configured


# ---------------------------------------------------------------------------------- context
def bind(**fields: str | None) -> None:
    """Set context fields for the rest of the current task (and the tasks it starts)."""
    for name, value in fields.items():
        _vars[name].set(value)


@contextlib.contextmanager
def context(**fields: str | None) -> Iterator[None]:
    """Set context fields inside the block only."""
    tokens = [(_vars[name], _vars[name].set(value)) for name, value in fields.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def current() -> dict[str, str]:
    """The context fields set here (unset ones left out)."""
    return {name: value for name, var in _vars.items() if (value := var.get()) is not None}


def redact(text: str) -> str:
    return _SECRET.sub("[redacted]", text)


# ---------------------------------------------------------------------------------- formats
def _fields(record: logging.LogRecord) -> dict[str, str]:
    """Context fields, plus the object of kopf's per-object lines (its `k8s_ref`)."""
    fields = current()
    ref = getattr(record, "k8s_ref", None)
    if isinstance(ref, Mapping) and ref.get("name"):
        where = f"{ref['namespace']}/{ref['name']}" if ref.get("namespace") else str(ref["name"])
        key = "scale_set" if ref.get("kind") == "RunnerScaleSet" else "object"
        fields.setdefault(key, where if key == "scale_set" else f"{ref.get('kind')} {where}")
    return fields


def _time(record: logging.LogRecord) -> str:
    moment = dt.datetime.fromtimestamp(record.created, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
            **_fields(record),
        }
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exception"] = redact(record.exc_text)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """`time level logger message key=value...`, the context fields last, where set."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{_time(record)} {record.levelname} {record.name} {redact(record.getMessage())}"
        suffix = " ".join(f"{k}={_quoted(v)}" for k, v in _fields(record).items())
        if suffix:
            text = f"{text} {suffix}"
        if record.exc_info:
            text = f"{text}\n{redact(self.formatException(record.exc_info))}"
        return text


def _quoted(value: str) -> str:
    return json.dumps(value) if not value or any(ch in value for ch in ' "=\n') else value


class DemoteNoise(logging.Filter):
    """A handler filter: INFO lines that come once per request or per watch event become
    DEBUG ones, dropped unless the process logs at DEBUG (`threshold`). They are the request
    loggers' lines, and kopf's "Handler 'wake_on_change' succeeded." for each watch event
    (its local object logger, `k8s_skip`: 453 of the operator's 475 lines in a 200-job demo);
    kopf's lines about change and delete handlers stay."""

    def __init__(self, threshold: int) -> None:
        super().__init__()
        self.threshold = threshold

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and _noise(record):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return record.levelno >= self.threshold


def _noise(record: logging.LogRecord) -> bool:
    if any(record.name == n or record.name.startswith(n + ".") for n in REQUEST_LOGGERS):
        return True
    return (
        record.name == "kopf.objects" and getattr(record, "k8s_skip", False) is True
        and str(record.msg).endswith(" succeeded.")
    )  # fmt: skip


def formatter(fmt: str) -> logging.Formatter:
    return JsonFormatter() if fmt == FORMAT_JSON else TextFormatter()


def configure(fmt: str, verbose: bool = False, stream: TextIO | None = None) -> None:
    """Make every root handler (kopf's included, if it installed one) use `fmt`; add one on
    `stream` (stderr) if there is none. Request loggers are demoted to DEBUG."""
    global _configured
    _configured = fmt
    root = logging.getLogger()
    level = logging.DEBUG if verbose else logging.INFO
    root.setLevel(level)
    if not root.handlers:
        root.addHandler(logging.StreamHandler(stream or sys.stderr))
    for handler in root.handlers:
        handler.setFormatter(formatter(fmt))
        handler.filters[:] = [f for f in handler.filters if not isinstance(f, DemoteNoise)]
        handler.addFilter(DemoteNoise(level))
    for name in REQUEST_LOGGERS:
        # Older set-ups silenced some at WARNING; the filter decides now (DEBUG with --verbose).
        logging.getLogger(name).setLevel(logging.NOTSET)
