# Index diet (docs/performance.md): every usage debit writes each ledger index, and
# the company_id FK index is redundant with ledger_company_id_desc,
# ledger_company_kind_id and the idempotency key, which all lead with company_id.
#
# State: the FK loses db_index. Database: only DROP INDEX (cheap on 10M rows).

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0005_ledger_kind_index"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="ledgerentry",
                    name="company",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="ledger_entries",
                        to="billing.company",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    "DROP INDEX IF EXISTS billing_ledgerentry_company_id_b563881d",
                    reverse_sql=(
                        "CREATE INDEX IF NOT EXISTS billing_ledgerentry_company_id_b563881d"
                        " ON billing_ledgerentry (company_id)"
                    ),
                ),
            ],
        ),
    ]
