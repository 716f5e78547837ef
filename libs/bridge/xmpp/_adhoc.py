"""XEP-0050 ad-hoc commands of a worker as plain XML: a ``<command/>`` in, what to do out.
No slixmpp, no I/O: the adapter feeds ``Adhoc.receive`` and carries out its answer.

Why our own and not slixmpp's ``xep_0050``: that plugin keeps every finished session in
memory and its per-command disco lacks the features XEP-0050 requires; and the commands are
already known here (``Transport.describe``: who may run what, with each one's JSON Schema).

The flow (XEP-0050 §3.4 and §4):

- ``execute`` on a command's node without a session: a command without arguments runs at
  once; any other is answered ``status=executing`` with a data form (XEP-0004, ``type=form``)
  made from its JSON Schema and a new ``sessionid``. A form submitted with the first request
  runs at once too (one-shot clients).
- ``execute``/``complete``/``next`` with the session and a ``submit`` form: the values are
  turned into the command's body (``form_body``) and the command runs (``Run``); its result
  comes back as ``status=completed`` with a ``type=result`` form, one field per top-level
  key. A ``bad-request`` (a bad value) shows the form again, filled in as submitted, with an
  error note naming the field; any other error ends the session with an error note.
- ``cancel``: ``status=canceled``. ``prev``: refused (single-stage forms).

Sessions live in a small table keyed by (requester's full JID, sessionid): removed as soon as
they finish, expired after ``SESSION_TTL`` seconds without use, at most ``PER_REQUESTER`` per
account (its oldest goes) and ``MAX_SESSIONS`` in all (then ``resource-constraint``).
"""

from __future__ import annotations

import json
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ..access import bare_jid
from ..protocol import ApiError, ApiResult, Progress, xml_safe

__all__ = ["COMMANDS_NS", "DATA_NS", "MAX_SESSIONS", "PER_REQUESTER", "SESSION_TTL", "Adhoc", "Answer",
           "Field", "Refused", "Request", "Run", "command_element", "form_body", "form_fields", "parse_command",
           "running_element"]

COMMANDS_NS: Final = "http://jabber.org/protocol/commands"
DATA_NS: Final = "jabber:x:data"
VALIDATE_NS: Final = "http://jabber.org/protocol/xdata-validate"  # XEP-0122
SESSION_TTL: Final = 600.0  # s a session waits for its next step
PER_REQUESTER: Final = 10  # open sessions per account (bare JID)
MAX_SESSIONS: Final = 1000  # open sessions in all
_COMMAND_TAG: Final = f"{{{COMMANDS_NS}}}command"
_X_TAG: Final = f"{{{DATA_NS}}}x"
_ACTIONS: Final = frozenset({"execute", "next", "complete", "prev", "cancel"})
_NOTE_MAX: Final = 1000  # characters of an error note


# -- parsing ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """A ``<command/>`` as received: ``values`` are the fields of a submitted form (var ->
    values), None when no ``submit`` form came with it."""

    node: str
    action: str = "execute"
    sessionid: str | None = None
    values: dict[str, list[str]] | None = None


def parse_command(iq: ET.Element) -> Request | None:
    """The XEP-0050 request an IQ ``set`` carries, or None (not one: no ``<command/>``)."""
    command = iq.find(_COMMAND_TAG)
    if command is None:
        return None
    values: dict[str, list[str]] | None = None
    form = command.find(_X_TAG)
    if form is not None and form.get("type", "submit") == "submit":
        values = {}
        for item in form.findall(f"{{{DATA_NS}}}field"):
            var = item.get("var")
            if var:
                values[var] = [v.text or "" for v in item.findall(f"{{{DATA_NS}}}value")]
    return Request(command.get("node", ""), command.get("action") or "execute", command.get("sessionid") or None,
                   values)


# -- forms from JSON Schemas ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Field:
    """One form field for one argument. ``kind`` says how its values become JSON: ``int``,
    ``number``, ``string``, ``bool``, ``choice`` (``options``), ``list`` (of ``item`` kind) or
    ``json`` (anything else, typed as JSON text)."""

    var: str
    type: str  # XEP-0004 field type
    kind: str
    label: str
    required: bool = False
    default: list[str] = field(default_factory=list)
    options: tuple[Any, ...] = ()
    item: str = "string"
    desc: str = ""


def _resolve(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return {**defs.get(ref.rpartition("/")[2], {}), **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _unwrap_optional(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> Mapping[str, Any]:
    """``X | None`` (``anyOf: [X, {type: null}]``) as X, keeping the outer default."""
    schema = _resolve(schema, defs)
    options = schema.get("anyOf")
    if isinstance(options, list):
        kept = [o for o in options if o.get("type") != "null"]
        if len(kept) == 1:
            return {**_resolve(kept[0], defs), **{k: v for k, v in schema.items() if k != "anyOf"}}
    return schema


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "1" if value else "0"
    return json.dumps(value)


def _field(var: str, schema: Mapping[str, Any], defs: Mapping[str, Any], required: bool) -> Field:
    schema = _unwrap_optional(schema, defs)
    label = str(schema.get("title") or var)
    desc = str(schema.get("description") or "")
    has_default = "default" in schema and schema["default"] is not None
    default = schema.get("default")
    kind_of = {"integer": "int", "number": "number", "string": "string", "boolean": "bool"}
    if "enum" in schema and isinstance(schema["enum"], list):
        return Field(var, "list-single", "choice", label, required, [_text(default)] if has_default else [],
                     tuple(schema["enum"]), desc=desc)
    kind = kind_of.get(str(schema.get("type")))
    if kind is not None:
        ftype = "boolean" if kind == "bool" else "text-single"
        return Field(var, ftype, kind, label, required, [_text(default)] if has_default else [], desc=desc)
    if schema.get("type") == "array":
        items = _unwrap_optional(schema.get("items") or {}, defs)
        if "enum" in items and isinstance(items["enum"], list):
            return Field(var, "list-multi", "list", label, required,
                         [_text(v) for v in default] if has_default and isinstance(default, list) else [],
                         tuple(items["enum"]), item="choice", desc=desc)
        item = kind_of.get(str(items.get("type")))
        if item is not None and item != "bool":
            return Field(var, "text-multi", "list", label, required,
                         [_text(v) for v in default] if has_default and isinstance(default, list) else [],
                         item=item, desc=desc or "one value a line")
    return Field(var, "text-single", "json", label, required, [json.dumps(default)] if has_default else [],
                 desc=desc or "a JSON value")


def form_fields(schema: Mapping[str, Any]) -> list[Field] | None:
    """The fields of the form for a command's JSON Schema (``[]``: it takes no arguments);
    None when the schema names no arguments but takes any object (a legacy handler's): then
    one ``json`` field holds the whole body."""
    if not schema:
        return []  # a built-in: no arguments
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return None
    defs = schema.get("$defs") or {}
    required = set(schema.get("required") or ())
    return [_field(var, sub, defs, var in required) for var, sub in properties.items()]


_BODY_FIELD = Field("body", "text-multi", "json", "Body", False, ["{}"], desc="the request's body, a JSON object")


def _fields_of(schema: Mapping[str, Any]) -> list[Field]:
    fields = form_fields(schema)
    return [_BODY_FIELD] if fields is None else fields


def _convert(item: Field, kind: str, text: str) -> Any:
    """One submitted value as JSON for pydantic to check (lax: ``"3"`` is taken for an int)."""
    if kind == "bool":
        lowered = text.strip().lower()
        return {"1": True, "true": True, "0": False, "false": False}.get(lowered, text)
    if kind == "choice":
        for option in item.options:
            if _text(option) == text:
                return option
        return text
    if kind == "json":
        return json.loads(text)
    return text.strip() if kind in ("int", "number") else text


def form_body(fields: list[Field], values: Mapping[str, list[str]]) -> tuple[dict[str, Any], list[str]]:
    """The command's body from the submitted ``values``, and the problems found on the way
    (``"field: not JSON ..."``); the body's own checks are the command's (pydantic). An empty
    or absent single value leaves the argument out (its default, or "Field required")."""
    if fields == [_BODY_FIELD]:
        text = "\n".join(values.get("body", [])).strip() or "{}"
        try:
            whole = json.loads(text)
        except ValueError as exc:
            return {}, [f"body: not JSON ({exc})"]
        return (whole, []) if isinstance(whole, dict) else ({}, ["body: must be a JSON object"])
    body: dict[str, Any] = {}
    problems: list[str] = []
    for item in fields:
        given = values.get(item.var)
        if given is None:
            continue
        try:
            if item.kind == "list":
                lines = [line for text in given for line in text.splitlines()]
                body[item.var] = [_convert(item, item.item, line) for line in lines if line.strip()]
            elif given and given[0] != "":
                body[item.var] = _convert(item, item.kind, "\n".join(given) if item.kind in ("string", "json")
                                          else given[0])
        except ValueError as exc:
            problems.append(f"{item.var}: not JSON ({exc})")
    return body, problems


def _form(title: str, instructions: str, fields: list[Field], values: Mapping[str, list[str]] | None) -> ET.Element:
    x = ET.Element(_X_TAG, {"type": "form"})
    ET.SubElement(x, f"{{{DATA_NS}}}title").text = xml_safe(title)
    if instructions:
        ET.SubElement(x, f"{{{DATA_NS}}}instructions").text = xml_safe(instructions)
    for item in fields:
        element = ET.SubElement(x, f"{{{DATA_NS}}}field", {"var": item.var, "type": item.type,
                                                           "label": xml_safe(item.label)})
        if item.desc:
            ET.SubElement(element, f"{{{DATA_NS}}}desc").text = xml_safe(item.desc)
        if item.required:
            ET.SubElement(element, f"{{{DATA_NS}}}required")
        if item.kind in ("int", "number"):
            ET.SubElement(element, f"{{{VALIDATE_NS}}}validate",
                          {"datatype": "xs:integer" if item.kind == "int" else "xs:double"})
        for option in item.options:
            choice = ET.SubElement(element, f"{{{DATA_NS}}}option", {"label": xml_safe(_text(option))})
            ET.SubElement(choice, f"{{{DATA_NS}}}value").text = xml_safe(_text(option))
        shown = values.get(item.var, item.default) if values is not None else item.default
        for value in shown:
            ET.SubElement(element, f"{{{DATA_NS}}}value").text = xml_safe(value)
    return x


def result_form(title: str, payload: str | None) -> ET.Element | None:
    """A command's result as a ``type=result`` form: one field per top-level key (strings as
    they are, other values as JSON); None for an empty result."""
    try:
        result = json.loads(payload) if payload else {}
    except ValueError:
        result = payload
    if result in ({}, None):
        return None
    if not isinstance(result, dict):
        result = {"result": result}
    x = ET.Element(_X_TAG, {"type": "result"})
    ET.SubElement(x, f"{{{DATA_NS}}}title").text = xml_safe(title)
    for key, value in result.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        lines = text.split("\n")
        element = ET.SubElement(x, f"{{{DATA_NS}}}field", {"var": xml_safe(str(key)), "label": xml_safe(str(key)),
                                                           "type": "text-multi" if len(lines) > 1 else "text-single"})
        for line in lines:
            ET.SubElement(element, f"{{{DATA_NS}}}value").text = xml_safe(line)
    return x


def command_element(node: str, sessionid: str, status: str, *, form: ET.Element | None = None,
                    notes: tuple[tuple[str, str], ...] = (), actions: bool = False,
                    refresh: bool = False) -> ET.Element:
    """The ``<command/>`` of an answer; ``notes`` are (type, text); ``actions`` offers
    ``complete`` (a form waiting to be submitted), ``refresh`` offers ``next`` (ask again how
    a running command is doing)."""
    command = ET.Element(_COMMAND_TAG, {"node": xml_safe(node), "sessionid": sessionid, "status": status})
    if actions:
        choices = ET.SubElement(command, f"{{{COMMANDS_NS}}}actions", {"execute": "complete"})
        ET.SubElement(choices, f"{{{COMMANDS_NS}}}complete")
    elif refresh:
        choices = ET.SubElement(command, f"{{{COMMANDS_NS}}}actions", {"execute": "next"})
        ET.SubElement(choices, f"{{{COMMANDS_NS}}}next")
    for kind, text in notes:
        ET.SubElement(command, f"{{{COMMANDS_NS}}}note", {"type": kind}).text = xml_safe(text[:_NOTE_MAX])
    if form is not None:
        command.append(form)
    return command


# -- the flow -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """Answer the IQ with this ``<command/>``."""

    command: ET.Element


@dataclass(frozen=True, slots=True)
class Refused:
    """Answer the IQ with this stanza error; ``specific`` is XEP-0050's own condition
    (``bad-sessionid``, ``malformed-action``, ``bad-action``), in its namespace."""

    condition: str
    type: str = "cancel"
    specific: str | None = None
    text: str = ""


@dataclass(frozen=True, slots=True)
class Run:
    """Run command ``node`` with ``body`` for the requester; then ``Adhoc.ran`` says what to
    answer. ``values`` are what was submitted (shown again with a bad-request)."""

    node: str
    sessionid: str
    body: dict[str, Any]
    values: dict[str, list[str]]


@dataclass(slots=True)
class _Session:
    node: str
    expires: float


class Adhoc:
    """The sessions of one worker and the rules of XEP-0050 over them. Call on one thread
    (the loop); ``now`` is a monotonic clock in seconds."""

    def __init__(self, *, ttl: float = SESSION_TTL, per_requester: int = PER_REQUESTER,
                 max_sessions: int = MAX_SESSIONS) -> None:
        self.ttl = ttl
        self.per_requester = per_requester
        self.max_sessions = max_sessions
        # (requester's full JID, sessionid) -> session; insertion order = expiry order (a
        # session used again is moved to the end)
        self._sessions: dict[tuple[str, str], _Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def _expire(self, now: float) -> None:
        while self._sessions:
            key, session = next(iter(self._sessions.items()))
            if session.expires > now:
                return
            del self._sessions[key]

    def _open(self, sender: str, node: str, now: float, sessionid: str | None = None) -> str | None:
        """A new session (or ``sessionid`` again); None when the table is full."""
        account = bare_jid(sender)
        mine = [key for key in self._sessions if bare_jid(key[0]) == account]
        if len(mine) >= self.per_requester:
            del self._sessions[mine[0]]  # the account's oldest makes room
        elif len(self._sessions) >= self.max_sessions:
            return None
        sessionid = sessionid or secrets.token_hex(8)
        self._sessions[(sender, sessionid)] = _Session(node, now + self.ttl)
        return sessionid

    def receive(self, sender: str, request: Request, commands: list[dict[str, Any]] | None,
                now: float) -> Answer | Refused | Run:
        """What to do with ``request`` from ``sender`` (full JID). ``commands`` is what it
        may run (``Transport.describe``), None when it may not call the worker at all."""
        self._expire(now)
        if commands is None:
            return Refused("forbidden", "auth", text="this worker is not public and you are not allowed")
        if request.action not in _ACTIONS:
            return Refused("bad-request", "modify", "malformed-action")
        found = [c for c in commands if c["name"] == request.node]
        if request.sessionid is None:
            if not found:
                return Refused("item-not-found")
            command = found[0]
            fields = _fields_of(command.get("schema") or {})
            if request.action == "cancel":
                return Answer(command_element(request.node, secrets.token_hex(8), "canceled"))
            if fields and request.values is None:
                sessionid = self._open(sender, request.node, now)
                if sessionid is None:
                    return Refused("resource-constraint", "wait", text="too many open command sessions; retry later")
                return Answer(self._form_answer(command, sessionid, fields))
            return self._run(sender, command, secrets.token_hex(8), fields, request.values or {}, now)
        key = (sender, request.sessionid)
        session = self._sessions.get(key)
        if session is None or session.node != request.node:
            return Refused("bad-request", "modify", "bad-sessionid", "no such session (finished or expired)")
        if request.action == "cancel":
            del self._sessions[key]
            return Answer(command_element(request.node, request.sessionid, "canceled"))
        if request.action == "prev":
            return Refused("bad-request", "modify", "bad-action", "this command has one stage")
        del self._sessions[key]  # running now; a bad value opens it again (ran)
        if not found:  # no longer allowed, or gone since the form was sent
            return Refused("item-not-found")
        return self._run(sender, found[0], request.sessionid, _fields_of(found[0].get("schema") or {}),
                         request.values or {}, now)

    def _run(self, sender: str, command: Mapping[str, Any], sessionid: str, fields: list[Field],
             values: dict[str, list[str]], now: float) -> Run | Answer:
        body, problems = form_body(fields, values)
        if not problems:
            return Run(command["name"], sessionid, body, values)
        error = "bad-request: " + "; ".join(problems)
        if self._open(sender, command["name"], now, sessionid) is None:
            return Answer(command_element(command["name"], sessionid, "completed", notes=(("error", error),)))
        return Answer(self._form_answer(command, sessionid, fields, values, error))

    def _form_answer(self, command: Mapping[str, Any], sessionid: str, fields: list[Field],
                     values: Mapping[str, list[str]] | None = None, error: str | None = None) -> ET.Element:
        description = str(command.get("description") or "")
        form = _form(description or command["name"], description, fields, values)
        notes = (("error", error),) if error else ()
        return command_element(command["name"], sessionid, "executing", form=form, notes=notes, actions=True)

    def ran(self, sender: str, run: Run, answer: ApiResult | ApiError, commands: list[dict[str, Any]] | None,
            now: float) -> Answer:
        """The answer once the command of ``run`` ended with ``answer``: its result as a
        form, or an error note; a ``bad-request`` shows the form again in the same session."""
        if isinstance(answer, ApiResult):
            title = next((str(c.get("description") or "") for c in commands or () if c["name"] == run.node), "")
            form = result_form(title or run.node, answer.payload)
            notes = () if form is not None else (("info", "done"),)
            return Answer(command_element(run.node, run.sessionid, "completed", form=form, notes=notes))
        text = f"{answer.code}: {answer.message}" if answer.message else answer.code
        found = [c for c in commands or () if c["name"] == run.node]
        if answer.code == "bad-request" and found:
            fields = _fields_of(found[0].get("schema") or {})
            if fields and self._open(sender, run.node, now, run.sessionid) is not None:
                return Answer(self._form_answer(found[0], run.sessionid, fields, run.values, text))
        return Answer(command_element(run.node, run.sessionid, "completed", notes=(("error", text),)))


def running_element(node: str, sessionid: str, progress: Progress | None) -> ET.Element:
    """The answer while a command still runs: ``executing`` with its latest progress as an
    info note (XEP-0050 has no progress element; this is the closest), and ``next`` offered
    to ask again. The requester sends ``execute`` (or ``next``) with the session to refresh,
    ``cancel`` to stop the command."""
    if progress is None:
        text = "running"
    else:
        percent = "" if progress.fraction is None else f"{progress.fraction:.0%} "
        text = f"running: {percent}{progress.text}".rstrip()
    return command_element(node, sessionid, "executing", notes=(("info", text),), refresh=True)
