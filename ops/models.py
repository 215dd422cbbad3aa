"""Operational state that belongs to no domain app: the cron commands' leases."""

from __future__ import annotations

from django.db import models


class CommandLease(models.Model):
    """Which run of a cron command may work now, and until when (ops.leases).

    A row, rather than a session-level advisory lock, because a lock held by a
    session does not survive transaction pooling (PgBouncer hands the server
    connection to another client after every transaction), and a lease that
    is not renewed expires by itself when its run crashed.
    """

    name = models.CharField(primary_key=True, max_length=100)
    token = models.UUIDField(help_text="Identifies the run holding the lease.")
    holder = models.CharField(max_length=200, help_text="Host and process id of that run.")
    acquired_at = models.DateTimeField()
    expires_at = models.DateTimeField(
        help_text="The lease is free after this instant unless its run renews it."
    )

    class Meta:
        db_table = "ops_command_lease"

    def __str__(self) -> str:
        return f"{self.name} held by {self.holder} until {self.expires_at:%Y-%m-%d %H:%M:%S}"
