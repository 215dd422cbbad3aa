"""Validate the ledger checks price_dimensions_and_tiers added back NOT VALID.

Its own migration, so its own transaction: VALIDATE CONSTRAINT scans the
ledger under a SHARE UPDATE EXCLUSIVE lock, which lets postings go on.
"""

from django.db import migrations

CHECKS = ["ledger_amount_not_zero", "ledger_amount_sign_matches_kind"]


class Migration(migrations.Migration):
    dependencies = [("billing", "0009_price_dimensions_and_tiers")]

    operations = [
        migrations.RunSQL(
            [f"ALTER TABLE billing_ledgerentry VALIDATE CONSTRAINT {name}" for name in CHECKS],
            migrations.RunSQL.noop,
        )
    ]
