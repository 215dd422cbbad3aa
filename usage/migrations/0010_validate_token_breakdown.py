"""Validate the checks token_breakdown added NOT VALID.

Its own migration, so its own transaction: VALIDATE CONSTRAINT scans the
table under a SHARE UPDATE EXCLUSIVE lock, which lets inserts and updates go on.
"""

from django.db import migrations

CHECKS = ["usage_breakdown_within_totals", "usage_known_service_tier", "usage_cost_matches_source"]


class Migration(migrations.Migration):
    dependencies = [("usage", "0009_token_breakdown")]

    operations = [
        migrations.RunSQL(
            [f"ALTER TABLE question_generation_usage VALIDATE CONSTRAINT {name}" for name in CHECKS],
            migrations.RunSQL.noop,
        )
    ]
