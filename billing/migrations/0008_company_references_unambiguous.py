"""A company reference (a UUID or an external id) names exactly one company.

References are resolved UUID first (billing.companies.resolve_companies), so
an external id that reads as another company's UUID would send that company's
usage elsewhere. The trigger refuses, whoever writes (the API, the admin, SQL):

- an external id that reads as the id of another company;
- a company whose id is the external id (read as a UUID) of another one.

`billing_ref_uuid` is the one reading of a text as a UUID, mirrored by
billing.companies.reference_uuid: braces and hyphens removed, 32 hex digits.
Concurrent writers claiming the same UUID queue on a transaction advisory
lock (taken in key order, so two of them cannot deadlock), so each sees the
other's committed row. A database that already holds such a pair is
refused with the pair named, before any trigger is created.
"""

from django.db import migrations

FORWARD = [
    """
    CREATE OR REPLACE FUNCTION billing_ref_uuid(ref text) RETURNS uuid AS $$
        SELECT CASE WHEN translate(ref, '{}-', '') ~ '^[0-9a-fA-F]{32}$'
                    THEN translate(ref, '{}-', '')::uuid END
    $$ LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    """,
    """
    CREATE INDEX IF NOT EXISTS billing_company_external_uuid
    ON billing_company (billing_ref_uuid(external_id))
    WHERE billing_ref_uuid(external_id) IS NOT NULL
    """,
    """
    DO $$
    DECLARE clash record;
    BEGIN
        SELECT a.id AS company, b.id AS other, b.external_id INTO clash
        FROM billing_company a
        JOIN billing_company b ON billing_ref_uuid(b.external_id) = a.id AND b.id <> a.id
        LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'company % has the external id %, which is the id of company %',
                clash.other, clash.external_id, clash.company
                USING HINT = 'Change that external id, then migrate again.';
        END IF;
    END $$
    """,
    """
    CREATE OR REPLACE FUNCTION billing_company_refs_unambiguous() RETURNS trigger AS $$
    DECLARE
        ext uuid := billing_ref_uuid(NEW.external_id);
    BEGIN
        PERFORM pg_advisory_xact_lock(k)
        FROM (SELECT DISTINCT hashtextextended(u::text, 17) AS k
              FROM unnest(ARRAY[NEW.id, ext]) AS u WHERE u IS NOT NULL ORDER BY 1) AS keys;
        IF ext IS NOT NULL AND ext <> NEW.id
           AND EXISTS (SELECT 1 FROM billing_company WHERE id = ext) THEN
            RAISE EXCEPTION 'external id % is the id of another company', NEW.external_id
                USING ERRCODE = 'unique_violation', CONSTRAINT = 'company_reference_unambiguous';
        END IF;
        IF EXISTS (SELECT 1 FROM billing_company
                   WHERE billing_ref_uuid(external_id) = NEW.id AND id <> NEW.id) THEN
            RAISE EXCEPTION 'id % is the external id of another company', NEW.id
                USING ERRCODE = 'unique_violation', CONSTRAINT = 'company_reference_unambiguous';
        END IF;
        RETURN NEW;
    END;
    $$ LANGUAGE plpgsql
    """,
    """
    CREATE TRIGGER company_reference_unambiguous
    BEFORE INSERT OR UPDATE OF id, external_id ON billing_company
    FOR EACH ROW EXECUTE FUNCTION billing_company_refs_unambiguous()
    """,
]
BACKWARD = [
    "DROP TRIGGER IF EXISTS company_reference_unambiguous ON billing_company",
    "DROP FUNCTION IF EXISTS billing_company_refs_unambiguous()",
    "DROP INDEX IF EXISTS billing_company_external_uuid",
    "DROP FUNCTION IF EXISTS billing_ref_uuid(text)",
]


def _run(statements):
    def run(apps, schema_editor):
        with schema_editor.connection.cursor() as cursor:
            for sql in statements:
                cursor.execute(sql)  # no params: the '%' in RAISE is literal

    return run


class Migration(migrations.Migration):
    dependencies = [("billing", "0007_lot_parts_add_up_in_state")]

    operations = [migrations.RunPython(_run(FORWARD), _run(BACKWARD))]
