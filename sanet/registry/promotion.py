"""`sanet promote`: the manual override of the promotion gate, with a reason on record.

Moving `champion` by hand is sometimes right (a benchmark was replaced, a known trade-off), but it must leave a
trace: the version gets the tags `promoted_by=manual`, `promotion_reason`, `promoted_at` (UTC), `promoted_from_version`
and `promoted_by_user`, and a small MLflow run (stage `promote`) carries the same tags, so the decision also shows in
the tracking history next to the runs it overrides.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sanet.registry.client import (
    CHAMPION,
    aliases,
    all_versions,
    global_tracking_uri,
    mlflow_errors,
    no_model_error,
    registered_model,
    registry_client,
)
from sanet.registry.errors import RegistryError

if TYPE_CHECKING:
    from sanet.config import Params

__all__ = ["PromoteResult", "promote"]


@dataclass(frozen=True)
class PromoteResult:
    """What `promote` did: the version that became champion, the one it replaced (None: there was none), and why."""

    model_name: str
    version: int
    previous_champion: int | None
    reason: str
    promoted_at: str
    user: str
    run_id: str

    def summary(self) -> str:
        """One line for the terminal."""
        before = f"v{self.previous_champion}" if self.previous_champion is not None else "no champion"
        return (
            f"{self.model_name} v{self.version} is the champion now (was {before}), promoted by {self.user} at "
            f"{self.promoted_at}: {self.reason} (MLflow run {self.run_id})"
        )


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return "unknown"


def promote(params: Params, version: int, reason: str) -> PromoteResult:
    """Make `version` of `registry.model_name` the champion by hand, recording `reason` (required) and who did it.

    Raises:
        TrackingError: the tracking store does not answer (checked first).
        RegistryError: an empty reason, no registered model, or an unknown version (the message lists the existing
            ones); nothing is changed then.
    """
    from sanet.infra.tracking import check_tracking_uri, run_tags, start_run, tracking_uri

    reason = reason.strip()
    if not reason:
        raise RegistryError(
            "a manual promotion needs a non-empty reason: say why this version should be the champion despite the "
            "gate (it is recorded on the version and in the tracking history)"
        )
    uri = tracking_uri(params)
    check_tracking_uri(uri)
    name = params.registry.model_name
    client = registry_client(uri)
    with global_tracking_uri(uri), mlflow_errors(uri, f"promoting {name!r} v{version}"):
        if registered_model(client, name) is None:
            raise no_model_error(name, uri)
        versions = {int(v.version): v for v in all_versions(client, name)}
        if version not in versions:
            known = ", ".join(f"v{n}" for n in sorted(versions)) or "none"
            raise RegistryError(f"{name!r} has no version {version}; existing versions: {known}")
        target = versions[version]
        previous = aliases(client, name).get(CHAMPION)
        promotion = {
            "promoted_by": "manual",
            "promotion_reason": reason,
            "promoted_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
            "promoted_from_version": "" if previous is None else str(previous),
            "promoted_by_user": _user(),
        }
        extra = {"model_name": name, "model_version": str(version), **promotion}
        tags = run_tags(params, target.tags.get("data_md5", ""), stage="promote", extra=extra)
        with start_run(params, stage="promote", run_name=f"promote v{version}", tags=tags) as run:
            client.set_registered_model_alias(name, CHAMPION, str(version))
            for key, value in {**promotion, "promotion_run_id": run.info.run_id}.items():
                client.set_model_version_tag(name, str(version), key, value)
    return PromoteResult(
        name,
        version,
        previous,
        reason,
        promotion["promoted_at"],
        promotion["promoted_by_user"],
        run.info.run_id,
    )
