"""The operator image's Dockerfile, checked statically (no Docker on the test machines).

Multi-stage, every base pinned, a numeric non-root user in the final stage, `runnerfleet` as
the entrypoint, and the version tag the operator deploys by default matching pyproject.toml.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from runnerfleet import conventions
from runnerfleet.cli import main

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

ARG_REF = re.compile(r"\$\{(\w+)\}|\$(\w+)")
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
FULL_VERSION_TAG = re.compile(r":[^:/@]*\d+\.\d+\.\d+[^:/@]*$")


@dataclass
class Stage:
    image: str  # with global ARG defaults substituted
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]


def _instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) pairs; comments dropped, `\\` continuations joined."""
    found = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#"):
            continue  # comments (and parser directives), also inside a continuation
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line:
            keyword, _, args = line.partition(" ")
            found.append((keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a line continuation"
    return found


def _substitute(value: str, args: dict[str, str]) -> str:
    return ARG_REF.sub(lambda m: args.get(m.group(1) or m.group(2), m.group(0)), value)


def _parse(text: str) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, args in _instructions(text):
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]  # e.g. --platform=
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(_substitute(words[0], global_args), name))
        elif not stages:
            assert keyword == "ARG", f"only ARG may precede the first FROM, not {keyword}"
            arg, _, default = args.partition("=")
            global_args[arg] = default
        else:
            stages[-1].instructions.append((keyword, args))
    return Dockerfile(global_args, stages)


def _dockerfile() -> Dockerfile:
    return _parse(DOCKERFILE.read_text())


def _pairs(args: str) -> dict[str, str]:
    """`KEY=value KEY2="value 2"` of ENV and LABEL."""
    return dict(word.split("=", 1) for word in shlex.split(args))


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not exec (JSON array) form: {args}"
    return [str(v) for v in value]


def _pyproject_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as f:
        version: str = tomllib.load(f)["project"]["version"]
    return version


def test_parser_reads_continuations_comments_and_stages() -> None:
    parsed = _parse(
        "# syntax=docker/dockerfile:1\nARG BASE=python:3.11.11-slim\n"
        "FROM ${BASE} AS build\nRUN a \\\n  # note\n  && b\nFROM $BASE\nUSER 1:1\n"
    )
    assert parsed.global_args == {"BASE": "python:3.11.11-slim"}
    assert [(s.image, s.name) for s in parsed.stages] == [
        ("python:3.11.11-slim", "build"),
        ("python:3.11.11-slim", None),
    ]
    [(keyword, run)] = parsed.stages[0].instructions
    assert (keyword, run.split()) == ("RUN", ["a", "&&", "b"])
    assert parsed.final.all("USER") == ["1:1"]


def test_build_is_multi_stage() -> None:
    dockerfile = _dockerfile()
    assert len(dockerfile.stages) >= 2
    builder = dockerfile.stages[0]
    assert builder.name, "the builder stage needs a name for COPY --from"
    assert any("pip wheel" in run for run in builder.all("RUN")), "the builder builds a wheel"
    assert any("/opt/venv" in run for run in builder.all("RUN")), "and installs it in /opt/venv"


def test_every_base_image_is_pinned() -> None:
    dockerfile = _dockerfile()
    names = {stage.name for stage in dockerfile.stages if stage.name}
    for stage in dockerfile.stages:
        image = stage.image
        if image in names:
            continue  # built on an earlier stage
        assert "$" not in image, f"unresolved ARG in FROM {image}"
        assert not image.endswith(":latest"), f"{image} floats"
        assert DIGEST.search(image) or FULL_VERSION_TAG.search(image), (
            f"{image} is pinned neither to a digest nor to a full version tag"
        )


def test_final_stage_is_the_builder_base_with_only_the_venv() -> None:
    dockerfile = _dockerfile()
    builder, final = dockerfile.stages[0], dockerfile.final
    assert final.image == builder.image, "the venv's interpreter symlinks need the same base"
    assert not final.all("ADD")
    copies = [shlex.split(args) for args in final.all("COPY")]
    assert copies == [[f"--from={builder.name}", "/opt/venv", "/opt/venv"]]


def test_final_stage_runs_as_a_numeric_non_root_user() -> None:
    users = _dockerfile().final.all("USER")
    assert users, "the final stage sets no USER (it would run as root)"
    match = re.fullmatch(r"(\d+)(?::(\d+))?", users[-1])
    assert match, f"USER {users[-1]} must be numeric so runAsNonRoot can verify it"
    uid, gid = match.groups()
    assert int(uid) != 0
    assert gid is not None, "set the group too (UID:GID)"
    assert int(gid) != 0


def test_entrypoint_runs_runnerfleet_and_the_commands_exist() -> None:
    final = _dockerfile().final
    entrypoint = final.all("ENTRYPOINT")
    assert entrypoint, "no ENTRYPOINT"
    assert _exec_form(entrypoint[-1]) == ["runnerfleet"]
    cmd = final.all("CMD")
    assert cmd, "no CMD"
    assert _exec_form(cmd[-1]) == ["operator"]
    assert {"operator", "listen"} <= set(main.commands), "the image runs these subcommands"


def test_final_stage_environment() -> None:
    env: dict[str, str] = {}
    for args in _dockerfile().final.all("ENV"):
        env.update(_pairs(args))
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].split(":")[0] == "/opt/venv/bin"


def test_oci_labels_name_the_source_version_and_license() -> None:
    dockerfile = _dockerfile()
    final = dockerfile.final
    labels: dict[str, str] = {}
    for args in final.all("LABEL"):
        labels.update(_pairs(args))
    stage_args = {}
    for args in final.all("ARG"):
        arg, _, default = args.partition("=")
        stage_args[arg] = default or dockerfile.global_args.get(arg, "")
    with (ROOT / "pyproject.toml").open("rb") as f:
        project = tomllib.load(f)["project"]
    prefix = "org.opencontainers.image."
    for key in ("source", "title", "description", "licenses", "version", "revision"):
        assert labels.get(prefix + key), f"missing LABEL {prefix}{key}"
    assert labels[prefix + "source"].startswith("https://")
    assert labels[prefix + "licenses"] == project["license"]
    assert labels[prefix + "title"] == project["name"]
    assert _substitute(labels[prefix + "version"], stage_args) == project["version"]


def test_default_operator_image_tag_is_the_package_version() -> None:
    image = conventions.DEFAULT_OPERATOR_IMAGE
    repository, _, tag = image.rpartition(":")
    assert "/" in repository
    assert "@" not in image
    assert tag == _pyproject_version(), (
        f"{image} does not match pyproject version {_pyproject_version()}"
    )


def test_dockerignore_keeps_the_context_small_but_complete() -> None:
    ignored = {
        line.strip().removeprefix("**/").rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for pattern in (".venv", ".git", "tests", "bench", "__pycache__", "*.egg-info"):
        assert pattern in ignored, f".dockerignore does not exclude {pattern}"
    assert not any(line.startswith("!") for line in ignored), "keep it a plain deny list"
    sources: set[str] = set()
    for args in _dockerfile().stages[0].all("COPY"):
        words = [w for w in shlex.split(args) if not w.startswith("--")]
        sources.update(w.rstrip("/") for w in words[:-1])
    assert sources == {"pyproject.toml", "README.md", "operator"}
    assert not sources & ignored, f"the build context drops what COPY needs: {sources & ignored}"
    for source in sources:
        assert (ROOT / source).exists()
