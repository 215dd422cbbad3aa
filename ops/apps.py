from __future__ import annotations

from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "ops"
    verbose_name = "Operations"

    def ready(self) -> None:
        from ops import (
            checks,  # noqa: F401  (registers the `database` system check)
            logins,  # noqa: F401  (logs failed and locked-out logins)
        )
