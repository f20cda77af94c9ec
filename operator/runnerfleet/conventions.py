"""Names every layer agrees on: API group/version, kinds, labels, annotations, finalizers.

Layer: bottom (imported by everything, imports nothing of ours). No I/O.
"""

from __future__ import annotations

from typing import Final

GROUP: Final = "runnerfleet.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

RUNNER_SCALE_SET_KIND: Final = "RunnerScaleSet"
RUNNER_SCALE_SET_PLURAL: Final = "runnerscalesets"
TEAM_LISTENER_KIND: Final = "TeamListener"
TEAM_LISTENER_PLURAL: Final = "teamlisteners"

LABEL_PREFIX: Final = GROUP
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE: Final = "runnerfleet"
LABEL_SCALE_SET: Final = f"{LABEL_PREFIX}/scale-set"
LABEL_TEAM: Final = f"{LABEL_PREFIX}/team"

FINALIZER: Final = f"{GROUP}/cleanup"
