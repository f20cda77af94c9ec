"""Where a scale set registers on GitHub, parsed from its configUrl; and the credentials' shape.

Layer: models. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit


class InvalidGitHubConfigError(ValueError):
    """A configUrl or credential Secret that cannot be used; the message names the field/key."""


@dataclass(frozen=True)
class GitHubTarget:
    """The API base URL and the registration scope (org, repo or enterprise)."""

    api_base: str
    scope: Literal["org", "repo", "enterprise"]
    owner: str  # org login, or enterprise slug
    repo: str | None = None

    @property
    def key(self) -> str:
        """Identifies one registration namespace (runner names must be unique in it)."""
        return f"{self.api_base}|{self.scope}|{self.owner}|{self.repo or ''}"


def parse_config_url(url: str) -> GitHubTarget:
    """`https://github.com/ORG[/REPO]`, `.../enterprises/SLUG`, or the same on a GHES host."""
    parts = urlsplit(url.strip())
    path = [p for p in parts.path.split("/") if p]
    if parts.scheme not in ("http", "https") or not parts.netloc or not 1 <= len(path) <= 2:
        raise InvalidGitHubConfigError(
            f"spec.github.configUrl {url!r} must look like https://github.com/ORG, "
            "https://github.com/ORG/REPO or https://github.com/enterprises/SLUG"
        )
    host = parts.netloc.lower()
    if host in ("github.com", "www.github.com"):
        api = "https://api.github.com"
    elif host.endswith(".ghe.com"):
        api = f"{parts.scheme}://api.{host}"
    else:
        api = f"{parts.scheme}://{parts.netloc}/api/v3"
    if path[0] == "enterprises":
        if len(path) != 2:
            raise InvalidGitHubConfigError(
                f"spec.github.configUrl {url!r} lacks the enterprise slug"
            )
        return GitHubTarget(api, "enterprise", path[1])
    if len(path) == 2:
        return GitHubTarget(api, "repo", path[0], path[1])
    return GitHubTarget(api, "org", path[0])


@dataclass(frozen=True, repr=False)
class GitHubCredentials:
    """Token, or GitHub App (id, installation id, private key). Never printed: no repr."""

    token: str | None = None
    app_id: str | None = None
    installation_id: int | None = None
    private_key: str | None = None

    def __repr__(self) -> str:
        kind = "token" if self.token else f"app {self.app_id}/installation {self.installation_id}"
        return f"GitHubCredentials({kind})"

    @classmethod
    def from_secret_data(cls, secret_name: str, data: dict[str, str]) -> GitHubCredentials:
        """From a Secret's decoded data; raises InvalidGitHubConfigError naming the missing key."""
        if data.get("github_token"):
            return cls(token=data["github_token"])
        app_keys = ("github_app_id", "github_app_installation_id", "github_app_private_key")
        missing = [k for k in app_keys if not data.get(k)]
        if missing:
            raise InvalidGitHubConfigError(
                f"Secret {secret_name} must have key github_token, or all of "
                f"{', '.join(app_keys)} (missing: {', '.join(missing)})"
            )
        try:
            installation = int(data["github_app_installation_id"])
        except ValueError as err:
            raise InvalidGitHubConfigError(
                f"Secret {secret_name} key github_app_installation_id is not an integer"
            ) from err
        return cls(
            app_id=data["github_app_id"],
            installation_id=installation,
            private_key=data["github_app_private_key"],
        )
