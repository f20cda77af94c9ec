"""The log formats (pure): one JSON object per line, context fields only inside the context,
no secret values, request lines demoted to DEBUG."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from runnerfleet import logs

pytestmark = pytest.mark.unit


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing through a handler set up as `logs.configure` sets the root's."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.DemoteNoise(logging.INFO))
    logger = logging.getLogger("runnerfleet.test_logs")
    logger.handlers[:], logger.propagate = [handler], False
    logger.setLevel(logging.DEBUG)
    yield logger, stream
    logger.handlers[:], logger.propagate = [], True


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_each_line_is_one_object_with_the_fields(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.info("round took %.1fs\nsecond line", 1.25)
    logger.warning("plain")
    [first, second] = _lines(stream)
    assert first["level"] == "info"
    assert first["logger"] == "runnerfleet.test_logs"
    assert first["message"] == "round took 1.2s\nsecond line"
    assert str(first["time"]).endswith("Z")
    assert "T" in str(first["time"])
    assert second["level"] == "warning"
    assert "scale_set" not in first
    assert "runner" not in first
    assert "job" not in first


def test_context_fields_only_inside_the_context(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    with logs.context(scale_set="team-a/linux"):
        logger.info("in the round")
        with logs.context(runner="linux-abc", job="42"):
            logger.info("about one runner")
        logger.info("back in the round")
    logger.info("outside")
    lines = _lines(stream)
    assert lines[0]["scale_set"] == "team-a/linux"
    assert "runner" not in lines[0]
    assert (lines[1]["runner"], lines[1]["job"]) == ("linux-abc", "42")
    assert "runner" not in lines[2]
    assert lines[2]["scale_set"] == "team-a/linux"
    assert "scale_set" not in lines[3]


async def test_a_binding_in_one_task_does_not_leak_into_another(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured

    async def step(name: str) -> None:
        logs.bind(runner=name)
        await asyncio.sleep(0)
        logger.info("step")

    await asyncio.gather(step("a"), step("b"))
    logger.info("after")
    assert [line.get("runner") for line in _lines(stream)] == ["a", "b", None]


def test_extra_dict_values_never_reach_the_line(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.info("posted", extra={"token": "s3cr3t-value", "settings": {"key": "k3y-value"}})
    text = stream.getvalue()
    assert "s3cr3t-value" not in text
    assert "k3y-value" not in text
    assert set(_lines(stream)[0]) == {"time", "level", "logger", "message"}


def test_token_and_key_shaped_values_are_masked(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    token = "ghs_" + "A1b2C3d4" * 4
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----"
    logger.warning("auth failed with %s and %s", token, pem)
    try:
        raise ValueError(token)
    except ValueError:
        logger.exception("boom")
    text = stream.getvalue()
    assert token not in text
    assert "MIIEow" not in text
    assert "[redacted]" in _lines(stream)[0]["message"]
    assert "Traceback" in str(_lines(stream)[1]["exception"])


def test_kopf_object_lines_name_the_scale_set(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    ref = {"kind": "RunnerScaleSet", "namespace": "team-a", "name": "linux"}
    logger.info("Handler 'finalize_scale_set' succeeded.", extra={"k8s_ref": ref})
    ref = {"kind": "RunnerNodePool", "namespace": None, "name": "big"}
    logger.info("Deletion is processed", extra={"k8s_ref": ref})
    first, second = _lines(stream)
    assert first["scale_set"] == "team-a/linux"
    assert second["object"] == "RunnerNodePool big"


def test_request_lines_are_debug_and_dropped_at_info() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.TextFormatter())
    handler.addFilter(logs.DemoteNoise(logging.INFO))
    records = [
        logging.LogRecord("httpx", logging.INFO, "", 0, "HTTP Request: GET x", None, None),
        logging.LogRecord("aiohttp.access", logging.INFO, "", 0, "GET /metrics", None, None),
        logging.LogRecord("httpx", logging.WARNING, "", 0, "retrying", None, None),
        logging.LogRecord("runnerfleet.x", logging.INFO, "", 0, "session created", None, None),
    ]
    for record in records:
        handler.handle(record)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert "WARNING httpx retrying" in lines[0]
    assert "INFO runnerfleet.x session created" in lines[1]
    verbose = logs.DemoteNoise(logging.DEBUG)
    request = logging.LogRecord("httpx", logging.INFO, "", 0, "HTTP Request: GET x", None, None)
    assert verbose.filter(request)
    assert request.levelname == "DEBUG"


def test_kopf_per_watch_event_lines_are_demoted_but_its_change_handlers_are_not() -> None:
    noise = logs.DemoteNoise(logging.INFO)
    watch = logging.LogRecord("kopf.objects", logging.INFO, "", 0, "Handler 'wake' succeeded.",
                              None, None)  # fmt: skip
    watch.k8s_skip = True
    change = logging.LogRecord("kopf.objects", logging.INFO, "", 0, "Handler 'fin' succeeded.",
                               None, None)  # fmt: skip
    change.k8s_skip = False
    assert not noise.filter(watch)
    assert noise.filter(change)


def test_text_format_keeps_the_fields_as_key_value_suffixes() -> None:
    record = logging.LogRecord("runnerfleet.scaleset", logging.INFO, "", 0, "ok", None, None)
    with logs.context(scale_set="team-a/linux", runner="linux-x"):
        line = logs.TextFormatter().format(record)
    assert line.endswith(" INFO runnerfleet.scaleset ok scale_set=team-a/linux runner=linux-x")


def test_format_setting() -> None:
    assert logs.format_from_env({}) == "text"
    assert logs.format_from_env({"RUNNERFLEET_LOG_FORMAT": " JSON "}) == "json"
    with pytest.raises(logs.LogFormatError, match="RUNNERFLEET_LOG_FORMAT"):
        logs.format_from_env({"RUNNERFLEET_LOG_FORMAT": "yaml"})


def test_listener_pods_log_like_the_operator() -> None:
    from runnerfleet.builders.listener import ListenerIdentity, build_deployment
    from runnerfleet.models.team_listener import TeamListenerSpec
    from tests.support.factories import make_team_listener

    spec = TeamListenerSpec.model_validate(make_team_listener()["spec"])
    owner = ListenerIdentity("team-a", "ns", "uid", "image")

    def env(owner: ListenerIdentity) -> dict[str, str]:
        container = build_deployment(owner, spec)["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e.get("value", "") for e in container["env"]}

    assert logs.ENV_FORMAT not in env(owner)  # text: the default, not written (no roll)
    json_owner = ListenerIdentity("team-a", "ns", "uid", "image", log_format="json")
    assert env(json_owner)[logs.ENV_FORMAT] == "json"
