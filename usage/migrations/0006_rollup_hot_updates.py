# Rollup buckets updated in place (HOT): every usage insert adds to a bucket and
# every reconcile move takes from one and adds to another. They were all non-HOT
# updates (2.4M of 2.4M in the benchmark database), because rollup_pending_drafts
# INCLUDEd the summed generations and cost: each update wrote a new entry into
# every index of the table. The index now holds only company_id (and status in
# its predicate), which never change, and pages keep 20 % free for the new
# versions. The staff overview reads the pending-draft sums from the heap now
# (docs/performance.md).
#
# fillfactor applies to pages written from now on; `VACUUM FULL
# usage_daily_rollup` (in a quiet moment: it locks the table) applies it to the
# existing ones at once.

from django.db import migrations, models

TABLE = "usage_daily_rollup"


def set_fillfactor(apps, schema_editor, value=80):
    schema_editor.execute(f"ALTER TABLE {TABLE} SET (fillfactor = {int(value)})")


def reset_fillfactor(apps, schema_editor):
    schema_editor.execute(f"ALTER TABLE {TABLE} RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0006_ledger_drop_redundant_company_index"),
        ("usage", "0005_usage_id_uuid7"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="usagedailyrollup",
            name="rollup_pending_drafts",
        ),
        migrations.AddIndex(
            model_name="usagedailyrollup",
            index=models.Index(
                condition=models.Q(("status", "draft")),
                fields=["company"],
                name="rollup_pending_drafts",
            ),
        ),
        migrations.RunPython(set_fillfactor, reset_fillfactor, elidable=False),
    ]
