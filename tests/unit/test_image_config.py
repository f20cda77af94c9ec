"""`make image` and the Dockerfile build the same image: the config tools/image/build.sh gives
umoci (tools/image/config.json) matches the Dockerfile's final stage, and the pinned
dependency lock covers pyproject.toml's dependencies (docs/image.md).
"""

from __future__ import annotations

import importlib.util
import json
import re
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

from packaging.requirements import Requirement

from tests.unit.test_dockerfile import _dockerfile, _exec_form, _pairs

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "tools" / "image"


def _image_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("image_tool", TOOLS / "image.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config() -> dict[str, Any]:
    config: dict[str, Any] = _image_tool().load_config(TOOLS / "config.json", "9.9.9", "abc")
    return config


def _final_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in _dockerfile().final.all("ENV"):
        env.update(_pairs(args))
    return env


def test_user_entrypoint_cmd_and_workdir_match_the_dockerfile() -> None:
    final, config = _dockerfile().final, _config()
    assert config["user"] == final.all("USER")[-1]
    assert config["entrypoint"] == _exec_form(final.all("ENTRYPOINT")[-1])
    assert config["cmd"] == _exec_form(final.all("CMD")[-1])
    assert config["workingDir"] == final.all("WORKDIR")[-1]


def test_environment_matches_the_dockerfile() -> None:
    docker, image = _final_env(), _config()["env"]
    assert set(image) == set(docker)
    for key in set(docker) - {"PATH"}:
        assert image[key] == docker[key], key
    # The Dockerfile prepends the venv to the base image's PATH; the image spells it out.
    assert docker["PATH"].split(":")[0] == image["PATH"].split(":")[0] == "/opt/venv/bin"
    assert "$" not in image["PATH"]
    assert {"/usr/bin", "/bin"} <= set(image["PATH"].split(":"))


def test_exposed_ports_match_the_dockerfile() -> None:
    exposed = {
        port if "/" in port else f"{port}/tcp"
        for args in _dockerfile().final.all("EXPOSE")
        for port in args.split()
    }
    assert set(_config()["exposedPorts"]) == exposed


def test_labels_match_the_dockerfile() -> None:
    labels: dict[str, str] = {}
    for args in _dockerfile().final.all("LABEL"):
        labels.update(_pairs(args))
    image = _config()["labels"]
    assert set(image) == set(labels)
    prefix = "org.opencontainers.image."
    # The version and revision are build inputs in both; only the base differs by design.
    for key in set(labels) - {prefix + k for k in ("version", "revision", "base.name")}:
        assert image[key] == labels[key], key
    assert (image[prefix + "version"], image[prefix + "revision"]) == ("9.9.9", "abc")
    assert "debian:bookworm" in image[prefix + "base.name"]


def test_the_image_user_has_passwd_and_group_entries() -> None:
    config = _config()
    uid, gid = config["user"].split(":")
    assert any(e.split(":")[2:4] == [uid, gid] for e in config["user_entries"]["passwd"])
    assert any(e.split(":")[2] == gid for e in config["user_entries"]["group"])


def test_umoci_arguments_set_every_field_of_the_config() -> None:
    config = _config()
    args = _image_tool().umoci_args(config, "2026-01-01T00:00:00Z")
    pairs = list(zip(args[::2], args[1::2], strict=True))
    assert ("--config.user", config["user"]) in pairs
    assert ("--config.workingdir", "/") in pairs
    assert [v for k, v in pairs if k == "--config.entrypoint"] == config["entrypoint"]
    assert [v for k, v in pairs if k == "--config.cmd"] == config["cmd"]
    assert [v for k, v in pairs if k == "--config.env"] == [
        f"{k}={v}" for k, v in config["env"].items()
    ]
    assert [v for k, v in pairs if k == "--config.exposedports"] == config["exposedPorts"]
    labels = dict(v.split("=", 1) for k, v in pairs if k == "--config.label")
    assert labels == config["labels"]
    assert ("--created", "2026-01-01T00:00:00Z") in pairs


def test_the_lock_pins_every_dependency_with_a_hash() -> None:
    with (ROOT / "pyproject.toml").open("rb") as f:
        dependencies = [Requirement(d) for d in tomllib.load(f)["project"]["dependencies"]]
    text = (TOOLS / "requirements.lock").read_text()
    pinned = {
        re.sub(r"[-_.]+", "-", name).lower(): version
        for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", text, re.M)
    }
    entries = [line for line in text.splitlines() if "==" in line]
    assert len(entries) == len(pinned) == text.count("--hash=sha256:")
    for requirement in dependencies:
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert name in pinned, f"{requirement.name} is not in tools/image/requirements.lock"
        assert requirement.specifier.contains(pinned[name]), (
            f"{requirement.name}=={pinned[name]} does not satisfy {requirement}: "
            "run `make image IMAGE_ARGS=--lock`"
        )


def test_the_config_file_is_plain_json_without_unknown_placeholders() -> None:
    text = (TOOLS / "config.json").read_text()
    assert set(re.findall(r"\$\{(\w+)\}", text)) == {"VERSION", "REVISION"}
    json.loads(text)
