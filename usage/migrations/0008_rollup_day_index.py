# The staff overview's platform totals read the last two months of every
# company's buckets. Built CONCURRENTLY: usage keeps being recorded (and its
# buckets written) while the index is built on a large rollup.

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("billing", "0007_lot_parts_add_up_in_state"),
        ("usage", "0007_provider_usage_buckets"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="usagedailyrollup",
            index=models.Index(fields=["day"], name="rollup_day"),
        ),
    ]
