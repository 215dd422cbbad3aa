# The CHECK remaining = amount - consumed - expired has existed since migration
# 0003, written by hand there; the model now declares it, so the migration state
# and the schema doctor know it. The database already has it: state only.

import django.db.models.expressions
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0006_ledger_drop_redundant_company_index"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AddConstraint(
                    model_name="creditlot",
                    constraint=models.CheckConstraint(
                        condition=models.Q(
                            (
                                "remaining",
                                django.db.models.expressions.CombinedExpression(
                                    django.db.models.expressions.CombinedExpression(
                                        models.F("amount"), "-", models.F("consumed")
                                    ),
                                    "-",
                                    models.F("expired"),
                                ),
                            )
                        ),
                        name="lot_parts_add_up",
                    ),
                ),
            ],
            database_operations=[],
        ),
    ]
