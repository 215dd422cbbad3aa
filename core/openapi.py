"""Writing a service's rules into an OpenAPI schema that pydantic only type-checks.

The API's models check types; the rules (non-blank, lengths, ranges, the text
rule of core.text) are the services', so that their messages reach the caller
unchanged. `document` writes those rules into a model's JSON schema, so that
a request the schema admits is one the service accepts (Schemathesis checks
both directions in CI). Where the schema cannot state a rule (a relation
between two fields, a bound that moves with the clock), the property's
description says it.
"""

from __future__ import annotations

from typing import Any

# Any text PostgreSQL can store (core.text; JSON Schema strings hold no lone surrogate).
STORABLE = r"^[^\u0000]*$"
# ...with at least one character that is not blank. Services strip their input
# with str.strip(), whose blanks (str.isspace) are not ECMA-262's \s (Python's
# include U+001C-U+001F and U+0085, ECMA's U+FEFF), so the class is spelt out.
PYTHON_BLANKS = "".join(f"\\u{code:04x}" for code in range(0x3001) if chr(code).isspace())
NON_BLANK = rf"^[^\u0000]*[^{PYTHON_BLANKS}\u0000][^\u0000]*$"
CANONICAL_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


def document(
    schema: dict[str, Any],
    rules: dict[str, dict[str, Any]],
    *,
    required: tuple[str, ...] = (),
    one_of_required: tuple[str, ...] = (),
) -> None:
    """Merge `rules` into the properties of a model's JSON schema (in place).

    `required` adds properties the schema should call required although the
    model accepts their absence for some callers (said in their description);
    `one_of_required` says at least one of those must be a non-empty string (an
    empty one counts as absent).
    """
    properties = schema.setdefault("properties", {})
    for name, rule in rules.items():
        properties.setdefault(name, {}).update(rule)
    if required:
        schema["required"] = sorted({*schema.get("required", []), *required})
        for name in required:  # and a string, not null
            prop = properties[name]
            prop.pop("anyOf", None)
            prop.pop("default", None)
            prop["type"] = "string"
    if one_of_required:
        schema["anyOf"] = [
            {"required": [name], "properties": {name: {"type": "string", "minLength": 1}}}
            for name in one_of_required
        ]
