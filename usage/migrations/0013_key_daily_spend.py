# The exact spend per API key, company and local day (usage.models.KeyDailySpend):
# a new, empty table (usage rows got their key in 0011, so none has one yet).

import billing.models
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0012_key_limits_and_reservations'),
        ('usage', '0012_validate_usage_api_key'),
    ]

    operations = [
        migrations.CreateModel(
            name='KeyDailySpend',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('day', models.DateField()),
                ('generations', models.BigIntegerField(default=0)),
                ('cost', billing.models.ExactAmountField(default=0)),
                ('unpriced', models.BigIntegerField(default=0, help_text='Generations without a cost yet.')),
                ('api_key', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='billing.apikey')),
                ('company', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='billing.company')),
            ],
            options={
                'db_table': 'usage_key_daily_spend',
                'indexes': [models.Index(fields=['company', 'day'], name='key_spend_company_day')],
                'constraints': [models.UniqueConstraint(fields=('api_key', 'company', 'day'), name='key_spend_unique_bucket')],
            },
        ),
    ]
