"""Give ledgers written before credit lots existed their lots and debt.

Replays each company's ledger in id order with the rules of billing.ledger
(soonest-expiring first, never-expiring last, uncovered consumption is debt,
new credit pays debt first), as of each entry's created_at. Before 0003 there
were no expiry entries, so every negative entry is a consumption.
"""

from decimal import Decimal

from django.db import migrations

CREDIT_KINDS_PROMOTIONAL = {"grant"}


def _replay(entries):
    lots, debt = [], Decimal(0)
    for e in entries:
        if e.amount > 0:
            usable = e.expires_at is None or e.expires_at > e.created_at
            paid = min(debt, e.amount) if usable else Decimal(0)
            debt -= paid
            lots.append({"entry": e, "consumed": paid, "last": e.created_at if paid else None})
            continue
        left = -e.amount
        open_lots = [
            lot for lot in lots
            if lot["entry"].amount > lot["consumed"]
            and (lot["entry"].expires_at is None or lot["entry"].expires_at > e.created_at)
        ]
        open_lots.sort(key=lambda lot: (lot["entry"].expires_at is None, lot["entry"].expires_at or 0, lot["entry"].id))
        for lot in open_lots:
            take = min(lot["entry"].amount - lot["consumed"], left)
            lot["consumed"] += take
            lot["last"] = e.created_at
            left -= take
            if not left:
                break
        debt += left
    return lots, debt


def backfill(apps, schema_editor):
    LedgerEntry = apps.get_model("billing", "LedgerEntry")
    CreditLot = apps.get_model("billing", "CreditLot")
    CreditBalance = apps.get_model("billing", "CreditBalance")
    company_ids = (
        LedgerEntry.objects.exclude(company_id__in=CreditLot.objects.values("company_id"))
        .order_by()  # the model orders by -id, which would defeat DISTINCT
        .values_list("company_id", flat=True)
        .distinct()
    )
    for company_id in list(company_ids):
        entries = LedgerEntry.objects.filter(company_id=company_id).order_by("id")
        lots, debt = _replay(entries.iterator())
        CreditLot.objects.bulk_create(
            CreditLot(
                company_id=company_id,
                entry=lot["entry"],
                funding="promotional" if lot["entry"].kind in CREDIT_KINDS_PROMOTIONAL else "paid",
                amount=lot["entry"].amount,
                consumed=lot["consumed"],
                expired=Decimal(0),
                remaining=lot["entry"].amount - lot["consumed"],
                expires_at=lot["entry"].expires_at,
                last_consumed_at=lot["last"],
            )
            for lot in lots
        )
        CreditBalance.objects.filter(company_id=company_id).update(debt=debt)


class Migration(migrations.Migration):
    dependencies = [("billing", "0003_credit_lots_and_alerts")]

    operations = [migrations.RunPython(backfill, migrations.RunPython.noop)]
