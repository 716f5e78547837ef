"""What ``qe-worker`` prints for people: the ``commands`` table, one line per scheduled run.

Pure functions from the worker's JSON answers to text (no I/O), so that the layout is tested on
canned answers. With ``--json`` the CLI prints the answers themselves instead.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["command_list", "commands_table", "job_line", "run_line"]

_INDENT = "    "


def command_list(answer: Any) -> list[dict[str, Any]]:
    """The entries of an answer to the built-in ``commands``
    (``{"commands": [{"name", "description", "access", "schema"}, ...]}``); ``ValueError`` with
    the line to show when the answer is not one (e.g. a QE script's ``onapi`` took the command)."""
    commands = answer.get("commands") if isinstance(answer, dict) else None
    if not isinstance(commands, list) or not all(
            isinstance(entry, dict) and isinstance(entry.get("name"), str) for entry in commands):
        raise ValueError("the answer is not a command list (expected {\"commands\": [{\"name\": ...}, ...]}): "
                         + _clip(json.dumps(answer, ensure_ascii=False), 200))
    return commands


def commands_table(answer: Any) -> str:
    """The commands of ``answer`` (see :func:`command_list`) as a table: one line per command
    (name, access, first line of its description, columns aligned), then one indented line
    per parameter of its JSON Schema (name, type, required or default, description)."""
    commands = sorted(command_list(answer), key=lambda entry: entry["name"])
    if not commands:
        return "(no commands)"
    rows = [(entry["name"], _text(entry.get("access")), _first_line(entry.get("description"))) for entry in commands]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    lines: list[str] = []
    for entry, (name, access, description) in zip(commands, rows):
        lines.append(f"{name:<{widths[0]}}  {access:<{widths[1]}}  {description}".rstrip())
        lines.extend(_INDENT + line for line in _parameters(entry.get("schema")))
    return "\n".join(lines)


def _parameters(schema: Any) -> list[str]:
    """One line per property of ``schema``, aligned; a line saying so when there is no schema
    or it names no properties."""
    if not isinstance(schema, dict):
        return ["(parameters not described)"]
    properties = schema.get("properties")
    if not isinstance(properties, dict) or not properties:
        return ["(no parameters)" if schema.get("additionalProperties") is False or properties == {}
                else "(parameters not described)"]
    required = schema.get("required")
    required_names = {name for name in required if isinstance(name, str)} if isinstance(required, list) else set()
    rows = []
    for name, prop in properties.items():
        prop = prop if isinstance(prop, dict) else {}
        need = "required" if name in required_names else (
            f"default {json.dumps(prop['default'], ensure_ascii=False)}" if "default" in prop else "optional")
        rows.append((str(name), _type(prop), need, _first_line(prop.get("description"))))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return [f"{n:<{widths[0]}}  {t:<{widths[1]}}  {r:<{widths[2]}}  {d}".rstrip() for n, t, r, d in rows]


def _type(prop: dict[str, Any]) -> str:
    """A short name for a property's JSON Schema type: ``string``, ``integer|null``,
    ``array of string``, ``one of "a", "b"``, ``any``."""
    if isinstance(prop.get("enum"), list):
        return "one of " + ", ".join(json.dumps(value, ensure_ascii=False) for value in prop["enum"])
    if "const" in prop:
        return json.dumps(prop["const"], ensure_ascii=False)
    kind = prop.get("type")
    if isinstance(kind, list):
        return "|".join(str(k) for k in kind) or "any"
    if not isinstance(kind, str):
        alternatives = prop.get("anyOf") or prop.get("oneOf")
        if isinstance(alternatives, list) and all(isinstance(a, dict) for a in alternatives):
            return "|".join(_type(a) for a in alternatives) or "any"
        return "any"
    items = prop.get("items")
    if kind == "array" and isinstance(items, dict):
        return f"array of {_type(items)}"
    return kind


def run_line(notification: dict[str, Any]) -> str:
    """A scheduled run's result notification (``{"job", "cmd", "scheduled_for", "ok",
    "result" | "error"}``) as one line: ``TIME CMD ok RESULT_JSON`` or ``TIME CMD failed: ERROR``."""
    head = f"{_text(notification.get('scheduled_for'))} {_text(notification.get('cmd'))}"
    if notification.get("ok") is True:
        return f"{head} ok {json.dumps(notification.get('result'), ensure_ascii=False)}"
    return f"{head} failed: {_first_line(notification.get('error'))}"


def job_line(job: dict[str, Any]) -> str:
    """How a watched job ended, from its entry in the worker's ``jobs`` answer:
    ``job ID finished after N runs (E failed)`` or ``job ID cancelled (REASON)``."""
    status = _text(job.get("status"))
    line = f"job {_text(job.get('job'))} {status}"
    if isinstance(job.get("run_count"), int):
        line += f" after {job['run_count']} run{'' if job['run_count'] == 1 else 's'}"
        if job.get("error_count"):
            line += f" ({job['error_count']} failed)"
    if status == "cancelled" and job.get("last_error"):
        line += f": {_first_line(job['last_error'])}"
    return line


def _text(value: Any) -> str:
    return "?" if value is None else str(value)


def _first_line(value: Any) -> str:
    """The first non-empty line of a description, or ``""``."""
    if not isinstance(value, str):
        return ""
    return next((line.strip() for line in value.splitlines() if line.strip()), "")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
