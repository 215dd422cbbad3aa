# New usage ids are time-ordered (core.ids.uuid7). The default lives in
# Python, so the database has nothing to change: state only.

import core.ids
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("usage", "0004_drop_redundant_fk_indexes"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="questiongenerationusage",
                    name="id",
                    field=models.UUIDField(
                        default=core.ids.uuid7, editable=False, primary_key=True, serialize=False
                    ),
                ),
            ],
        ),
    ]
