"""Which repositories a TeamListener watches: one set of rules for the listener's polls and
the webhook relay's routing (`planning/webhook_routes.py`), so the two cannot drift apart.

- A repository-scoped configUrl watches that repository only.
- `repositories.names`: each `repo` (in the configUrl's owner) or `owner/repo`, exactly.
- `repositories.all`: every repository of the installation that is not archived and whose
  name matches `nameFilter` (a glob; default `*`).

Layer: planning. Pure.
"""

from __future__ import annotations

import fnmatch

from runnerfleet.models.github import GitHubTarget
from runnerfleet.models.team_listener import Repositories


def listed_repositories(target: GitHubTarget, selection: Repositories) -> list[str] | None:
    """The `owner/repo` names watched when they are fixed (a repository-scoped configUrl, or
    `names`); None when the selection is `all` (the installation's list decides)."""
    if target.scope == "repo":
        return [f"{target.owner}/{target.repo}"]
    if selection.all:
        return None
    out = []
    for name in selection.names:
        owner, _, repo = name.rpartition("/")
        out.append(f"{owner or target.owner}/{repo}")
    return out


def installation_repository_watched(selection: Repositories, name: str, archived: bool) -> bool:
    """With `all`: whether a repository of the installation (its name without owner) counts."""
    return not archived and fnmatch.fnmatch(name, selection.name_filter or "*")
