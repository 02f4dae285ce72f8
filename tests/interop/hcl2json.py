"""Terraform files as Terraform would read their literal values, as one JSON document per file.

Used by tests/trust.rs (issue 12) to check what `keyfed trust --format terraform` prints with a
real HCL2 parser (python-hcl2, installed by tests/run into target/interop-venv).

Usage: hcl2json.py FILE...  — prints a JSON list, one parsed document per file.

python-hcl2 keeps expressions as "${...}" strings and leaves Terraform's template escapes as
written, so two steps follow the parse:
  - `${jsonencode({...})}` is parsed again, its object taken as a value: {"jsonencode": {...}};
  - in literal strings, `$${` and `%%{` (Terraform's escapes for a literal `${` and `%{`) become
    `${` and `%{`, as Terraform itself turns them, and an unescaped one fails the run (Terraform
    would evaluate it). Expressions ("${...}") are left as they are.
"""

import json
import re
import sys

import hcl2
from hcl2.utils import SerializationOptions

OPTIONS = SerializationOptions(
    strip_string_quotes=True, explicit_blocks=False, with_comments=False
)
JSONENCODE = re.compile(r"^\$\{jsonencode\((.*)\)\}$", re.DOTALL)
EXPRESSION = re.compile(r"^\$\{(?!\{)")


def jsonencoded(value):
    """Replaces each `${jsonencode(OBJECT)}` string with {"jsonencode": OBJECT parsed}."""
    if isinstance(value, dict):
        return {k: jsonencoded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonencoded(v) for v in value]
    if isinstance(value, str):
        match = JSONENCODE.match(value)
        if match:
            inner = hcl2.loads("x = " + match.group(1) + "\n", serialization_options=OPTIONS)
            return {"jsonencode": jsonencoded(inner["x"])}
    return value


def literal(value):
    """Turns Terraform's template escapes in literal strings into what they stand for; a
    literal string with an unescaped `${` or `%{` (which Terraform would evaluate) is an error."""
    if isinstance(value, dict):
        return {literal(k): literal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [literal(v) for v in value]
    if isinstance(value, str) and not EXPRESSION.match(value):
        rest = value.replace("$${", "").replace("%%{", "")
        if "${" in rest or "%{" in rest:
            raise ValueError(f"a template sequence Terraform would evaluate in {value!r}")
        return value.replace("$${", "${").replace("%%{", "%{")
    return value


def main(paths):
    documents = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            parsed = hcl2.load(f, serialization_options=OPTIONS)
        documents.append(literal(jsonencoded(parsed)))
    json.dump(documents, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
