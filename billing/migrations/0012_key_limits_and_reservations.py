# API keys get daily and monthly spend limits; billing alerts may name the key whose
# limit was crossed (once per company, key, kind and period); reservations (holds
# on budget, never money) get their table. All small tables: plain DDL.

import billing.models
import django.db.models.deletion
import uuid
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0011_statements'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='Reservation',
            fields=[
                ('id', models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                ('amount', billing.models.ExactAmountField(help_text='The estimate held, exact.')),
                ('job_id', models.CharField(blank=True, max_length=255, null=True)),
                ('draft_job_id', models.CharField(blank=True, max_length=255, null=True)),
                ('idempotency_key', models.CharField(max_length=255)),
                ('request_fingerprint', models.CharField(max_length=64)),
                ('estimate', models.JSONField(default=dict, help_text='The estimate as it was asked.')),
                ('status', models.CharField(choices=[('open', 'Open'), ('settled', 'Settled'), ('released', 'Released'), ('expired', 'Expired')], default='open', max_length=16)),
                ('expires_at', models.DateTimeField()),
                ('settled_usage_id', models.UUIDField(blank=True, help_text='The usage row that settled it.', null=True)),
                ('settled_cost', billing.models.ExactAmountField(blank=True, help_text="The settling usage's cost (null while unpriced).", null=True)),
                ('closed_at', models.DateTimeField(blank=True, null=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
            ],
            options={
                'ordering': ['-created_at'],
            },
        ),
        migrations.RemoveConstraint(
            model_name='billingalert',
            name='alert_once_per_crossing',
        ),
        migrations.AddField(
            model_name='apikey',
            name='daily_limit',
            field=models.DecimalField(blank=True, decimal_places=12, help_text="Optional cap on this key's spend per day (the company's time zone); company keys only.", max_digits=28, null=True),
        ),
        migrations.AddField(
            model_name='apikey',
            name='monthly_limit',
            field=models.DecimalField(blank=True, decimal_places=12, help_text="Optional cap on this key's spend per month (the company's time zone); company keys only.", max_digits=28, null=True),
        ),
        migrations.AddField(
            model_name='billingalert',
            name='api_key',
            field=models.ForeignKey(blank=True, help_text="The key whose limit was crossed; empty for the company's own limit.", null=True, on_delete=django.db.models.deletion.CASCADE, related_name='billing_alerts', to='billing.apikey'),
        ),
        migrations.AddConstraint(
            model_name='apikey',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('daily_limit__isnull', True), ('daily_limit__gte', 0), _connector='OR'), models.Q(('monthly_limit__isnull', True), ('monthly_limit__gte', 0), _connector='OR')), name='api_key_limits_non_negative'),
        ),
        migrations.AddConstraint(
            model_name='apikey',
            constraint=models.CheckConstraint(condition=models.Q(('company__isnull', False), models.Q(('daily_limit__isnull', True), ('monthly_limit__isnull', True)), _connector='OR'), name='api_key_limits_on_company_keys'),
        ),
        migrations.AddConstraint(
            model_name='billingalert',
            constraint=models.UniqueConstraint(condition=models.Q(('rearmed_at__isnull', True)), fields=('company', 'api_key', 'kind', 'period'), name='alert_once_per_crossing', nulls_distinct=False),
        ),
        migrations.AddField(
            model_name='reservation',
            name='api_key',
            field=models.ForeignKey(blank=True, help_text='The key that asked for it; its limits count the hold.', null=True, on_delete=django.db.models.deletion.PROTECT, related_name='reservations', to='billing.apikey'),
        ),
        migrations.AddField(
            model_name='reservation',
            name='company',
            field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='reservations', to='billing.company'),
        ),
        migrations.AddIndex(
            model_name='reservation',
            index=models.Index(condition=models.Q(('status', 'open')), fields=['company', 'expires_at'], name='reservation_open_by_company'),
        ),
        migrations.AddIndex(
            model_name='reservation',
            index=models.Index(condition=models.Q(('status', 'open')), fields=['api_key', 'expires_at'], name='reservation_open_by_key'),
        ),
        migrations.AddIndex(
            model_name='reservation',
            index=models.Index(condition=models.Q(('status', 'open')), fields=['expires_at'], name='reservation_open_expiry'),
        ),
        migrations.AddConstraint(
            model_name='reservation',
            constraint=models.UniqueConstraint(fields=('company', 'idempotency_key'), name='reservation_unique_idempotency_key'),
        ),
        migrations.AddConstraint(
            model_name='reservation',
            constraint=models.UniqueConstraint(fields=('settled_usage_id',), name='reservation_one_per_usage'),
        ),
        migrations.AddConstraint(
            model_name='reservation',
            constraint=models.CheckConstraint(condition=models.Q(('amount__gte', 0)), name='reservation_amount_non_negative'),
        ),
        migrations.AddConstraint(
            model_name='reservation',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('settled_usage_id__isnull', False), ('status', 'settled')), models.Q(models.Q(('status', 'settled'), _negated=True), ('settled_usage_id__isnull', True)), _connector='OR'), name='reservation_settled_has_usage'),
        ),
        migrations.AddConstraint(
            model_name='reservation',
            constraint=models.CheckConstraint(condition=models.Q(('status__in', ['open', 'settled', 'released', 'expired'])), name='reservation_known_status'),
        ),
        migrations.AddConstraint(
            model_name='reservation',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('closed_at__isnull', True), ('status', 'open')), models.Q(models.Q(('status', 'open'), _negated=True), ('closed_at__isnull', False)), _connector='OR'), name='reservation_closed_when_not_open'),
        ),
    ]
