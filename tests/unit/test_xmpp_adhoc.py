"""XEP-0050 ad-hoc commands (``_adhoc``, pure): forms from JSON Schemas, submitted values back
to bodies, and the session rules."""

from __future__ import annotations

import enum
import xml.etree.ElementTree as ET
from typing import Any, Literal

import pytest

from libs.bridge.commands import CommandSpec
from libs.bridge.protocol import ApiError, ApiResult
from libs.bridge.xmpp import _adhoc
from libs.bridge.xmpp._adhoc import COMMANDS_NS, DATA_NS

ME = "client@localhost/gajim"


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


async def paint(width: int, ratio: float, label: str, colour: Colour = Colour.RED, shiny: bool = False,
                size: Literal[1, 2] = 1, tags: list[str] | None = None, ids: list[int] = [],  # noqa: B006
                extra: dict[str, int] | None = None) -> dict[str, Any]:
    return {}


async def legacy(specs):  # type: ignore[no-untyped-def]
    return {}


async def nothing() -> dict[str, Any]:
    return {}


def described(name: str, handler: Any) -> dict[str, Any]:
    return CommandSpec.create(name, handler, description=f"{name} it").describe()


COMMANDS = [described("paint", paint), described("legacy", legacy), described("nothing", nothing),
            {"name": "ping", "description": "", "access": "user", "schema": {}}]


def field_map(x: ET.Element) -> dict[str, ET.Element]:
    return {f.get("var", ""): f for f in x.findall(f"{{{DATA_NS}}}field")}


def values(element: ET.Element) -> list[str]:
    return [v.text or "" for v in element.findall(f"{{{DATA_NS}}}value")]


def request(node: str, action: str = "execute", sessionid: str | None = None,
            form: dict[str, list[str]] | None = None) -> _adhoc.Request:
    return _adhoc.Request(node, action, sessionid, form)


# -- forms -------------------------------------------------------------------------------------


def test_the_form_has_one_typed_field_per_argument() -> None:
    fields = {f.var: f for f in _adhoc.form_fields(COMMANDS[0]["schema"]) or []}
    assert list(fields) == ["width", "ratio", "label", "colour", "shiny", "size", "tags", "ids", "extra"]
    assert (fields["width"].type, fields["width"].kind, fields["width"].required) == ("text-single", "int", True)
    assert (fields["ratio"].kind, fields["label"].kind) == ("number", "string")
    assert (fields["colour"].type, fields["colour"].options, fields["colour"].default) == (
        "list-single", ("red", "blue"), ["red"])
    assert (fields["shiny"].type, fields["shiny"].default, fields["shiny"].required) == ("boolean", ["0"], False)
    assert fields["size"].options == (1, 2)
    assert (fields["tags"].type, fields["tags"].item) == ("text-multi", "string")
    assert (fields["ids"].type, fields["ids"].item, fields["ids"].default) == ("text-multi", "int", [])
    assert fields["extra"].kind == "json"


def test_a_command_without_arguments_has_no_fields_and_a_legacy_one_a_json_body() -> None:
    assert _adhoc.form_fields({}) == []
    assert _adhoc.form_fields(COMMANDS[2]["schema"]) == []
    assert _adhoc.form_fields(COMMANDS[1]["schema"]) is None


def test_submitted_values_become_the_body_pydantic_checks() -> None:
    fields = _adhoc.form_fields(COMMANDS[0]["schema"]) or []
    body, problems = _adhoc.form_body(fields, {
        "width": [" 3 "], "ratio": ["1.5"], "label": ["a", "b"], "colour": ["blue"], "shiny": ["true"],
        "size": ["2"], "tags": ["x\ny", ""], "ids": ["1", "2"], "extra": ['{"a": 1}'], "FORM_TYPE": ["x"]})
    assert problems == []
    assert body == {"width": "3", "ratio": "1.5", "label": "a\nb", "colour": "blue", "shiny": True, "size": 2,
                    "tags": ["x", "y"], "ids": ["1", "2"], "extra": {"a": 1}}
    spec = CommandSpec.create("paint", paint)
    assert spec.bind(body)["width"] == 3 and spec.bind(body)["ids"] == [1, 2]
    assert _adhoc.form_body(fields, {"shiny": ["0"], "width": [""]}) == ({"shiny": False}, [])
    _, problems = _adhoc.form_body(fields, {"extra": ["{nope"]})
    assert problems and problems[0].startswith("extra: not JSON")


# -- the flow ----------------------------------------------------------------------------------


def test_execute_answers_a_form_then_the_submission_runs_and_completes() -> None:
    adhoc = _adhoc.Adhoc()
    first = adhoc.receive(ME, request("paint"), COMMANDS, now=0)
    assert isinstance(first, _adhoc.Answer)
    command = first.command
    assert command.tag == f"{{{COMMANDS_NS}}}command" and command.get("status") == "executing"
    sessionid = command.get("sessionid")
    assert sessionid and len(adhoc) == 1
    x = command.find(f"{{{DATA_NS}}}x")
    assert x is not None and x.get("type") == "form"
    fields = field_map(x)
    assert fields["width"].find(f"{{{DATA_NS}}}required") is not None
    assert values(fields["colour"]) == ["red"]
    assert command.find(f"{{{COMMANDS_NS}}}actions") is not None

    run = adhoc.receive(ME, request("paint", "complete", sessionid, {"width": ["3"]}), COMMANDS, now=1)
    assert run == _adhoc.Run("paint", sessionid, {"width": "3"}, {"width": ["3"]})
    assert len(adhoc) == 0  # running: no longer waiting
    done = adhoc.ran(ME, run, ApiResult("i", ME, '{"w":3,"tags":["a"],"text":"x\\ny"}'), COMMANDS, now=2)
    command = done.command
    assert command.get("status") == "completed" and len(adhoc) == 0
    x = command.find(f"{{{DATA_NS}}}x")
    assert x is not None and x.get("type") == "result"
    result = field_map(x)
    assert values(result["w"]) == ["3"] and values(result["tags"]) == ['["a"]']
    assert values(result["text"]) == ["x", "y"] and result["text"].get("type") == "text-multi"


def test_a_bad_value_shows_the_form_again_with_an_error_note_naming_the_field() -> None:
    adhoc = _adhoc.Adhoc()
    run = adhoc.receive(ME, request("paint", form={"width": ["wide"]}), COMMANDS, now=0)
    assert isinstance(run, _adhoc.Run)
    answer = adhoc.ran(ME, run, ApiError("i", ME, "bad-request", "width: Input should be a valid integer"),
                       COMMANDS, now=1).command
    assert answer.get("status") == "executing" and answer.get("sessionid") == run.sessionid
    note = answer.find(f"{{{COMMANDS_NS}}}note")
    assert note is not None and note.get("type") == "error" and "width" in (note.text or "")
    x = answer.find(f"{{{DATA_NS}}}x")
    assert x is not None and values(field_map(x)["width"]) == ["wide"]
    assert len(adhoc) == 1  # the same session goes on
    again = adhoc.receive(ME, request("paint", "complete", run.sessionid, {"width": ["4"]}), COMMANDS, now=2)
    assert isinstance(again, _adhoc.Run) and again.body == {"width": "4"}


def test_other_errors_complete_with_an_error_note() -> None:
    adhoc = _adhoc.Adhoc()
    run = adhoc.receive(ME, request("nothing"), COMMANDS, now=0)
    assert isinstance(run, _adhoc.Run) and run.body == {}  # no arguments: runs at once
    answer = adhoc.ran(ME, run, ApiError("i", ME, "handler-error", "'nothing' failed: ValueError"), COMMANDS, 1)
    assert answer.command.get("status") == "completed"
    note = answer.command.find(f"{{{COMMANDS_NS}}}note")
    assert note is not None and note.get("type") == "error" and note.text == "handler-error: 'nothing' failed: ValueError"
    assert len(adhoc) == 0


def test_an_empty_result_completes_with_a_note() -> None:
    adhoc = _adhoc.Adhoc()
    run = adhoc.receive(ME, request("ping"), COMMANDS, now=0)
    assert isinstance(run, _adhoc.Run)
    answer = adhoc.ran(ME, run, ApiResult("i", ME, "{}"), COMMANDS, 1).command
    assert answer.find(f"{{{DATA_NS}}}x") is None and answer.find(f"{{{COMMANDS_NS}}}note") is not None


def test_legacy_commands_take_their_body_as_json() -> None:
    adhoc = _adhoc.Adhoc()
    first = adhoc.receive(ME, request("legacy"), COMMANDS, now=0)
    assert isinstance(first, _adhoc.Answer)
    sessionid = first.command.get("sessionid")
    run = adhoc.receive(ME, request("legacy", "complete", sessionid, {"body": ['{"a":', "1}"]}), COMMANDS, now=1)
    assert isinstance(run, _adhoc.Run) and run.body == {"a": 1}
    first = adhoc.receive(ME, request("legacy"), COMMANDS, now=0)
    assert isinstance(first, _adhoc.Answer)
    bad = adhoc.receive(ME, request("legacy", "complete", first.command.get("sessionid"), {"body": ["[1]"]}),
                        COMMANDS, now=1)
    assert isinstance(bad, _adhoc.Answer) and bad.command.get("status") == "executing"


def test_cancel_ends_the_session() -> None:
    adhoc = _adhoc.Adhoc()
    first = adhoc.receive(ME, request("paint"), COMMANDS, now=0)
    assert isinstance(first, _adhoc.Answer)
    sessionid = first.command.get("sessionid")
    cancelled = adhoc.receive(ME, request("paint", "cancel", sessionid), COMMANDS, now=1)
    assert isinstance(cancelled, _adhoc.Answer) and cancelled.command.get("status") == "canceled"
    assert len(adhoc) == 0
    assert adhoc.receive(ME, request("paint", "complete", sessionid, {}), COMMANDS, now=2) == _adhoc.Refused(
        "bad-request", "modify", "bad-sessionid", "no such session (finished or expired)")


@pytest.mark.parametrize(("req", "commands", "refused"), [
    (request("paint"), None, ("forbidden", "auth", None)),
    (request("secret"), COMMANDS, ("item-not-found", "cancel", None)),
    (request("paint", "jump"), COMMANDS, ("bad-request", "modify", "malformed-action")),
    (request("paint", "complete", "nope", {}), COMMANDS, ("bad-request", "modify", "bad-sessionid")),
])
def test_refusals(req: _adhoc.Request, commands: list[dict[str, Any]] | None, refused: tuple[str, str, str | None]) -> None:
    answer = _adhoc.Adhoc().receive(ME, req, commands, now=0)
    assert isinstance(answer, _adhoc.Refused) and (answer.condition, answer.type, answer.specific) == refused


def test_sessions_belong_to_their_full_jid_and_expire() -> None:
    adhoc = _adhoc.Adhoc(ttl=10)
    first = adhoc.receive(ME, request("paint"), COMMANDS, now=0)
    assert isinstance(first, _adhoc.Answer)
    sessionid = first.command.get("sessionid")
    other = adhoc.receive("client@localhost/other", request("paint", "complete", sessionid, {}), COMMANDS, now=1)
    assert isinstance(other, _adhoc.Refused) and other.specific == "bad-sessionid"
    adhoc.receive("x@localhost/y", request("paint"), COMMANDS, now=11)  # any call sweeps the expired
    assert len(adhoc) == 1
    late = adhoc.receive(ME, request("paint", "complete", sessionid, {}), COMMANDS, now=11)
    assert isinstance(late, _adhoc.Refused) and late.specific == "bad-sessionid"


def test_the_table_is_bounded_per_account_and_in_all() -> None:
    adhoc = _adhoc.Adhoc(per_requester=2, max_sessions=3)
    for i in range(5):
        assert isinstance(adhoc.receive(f"a@localhost/r{i}", request("paint"), COMMANDS, now=i), _adhoc.Answer)
    assert len(adhoc) == 2  # the account's oldest made room
    assert isinstance(adhoc.receive("b@localhost/r", request("paint"), COMMANDS, now=6), _adhoc.Answer)
    full = adhoc.receive("c@localhost/r", request("paint"), COMMANDS, now=7)
    assert isinstance(full, _adhoc.Refused) and full.condition == "resource-constraint"


def test_parse_command_reads_node_action_session_and_submitted_values() -> None:
    iq = ET.fromstring(
        f'<iq xmlns="jabber:client" type="set"><command xmlns="{COMMANDS_NS}" node="paint" action="complete" '
        f'sessionid="s1"><x xmlns="{DATA_NS}" type="submit"><field var="width"><value>3</value></field>'
        f'<field var="tags"><value>a</value><value>b</value></field><field var="none"/></x></command></iq>')
    assert _adhoc.parse_command(iq) == _adhoc.Request("paint", "complete", "s1",
                                                      {"width": ["3"], "tags": ["a", "b"], "none": []})
    bare = ET.fromstring(f'<iq xmlns="jabber:client" type="set"><command xmlns="{COMMANDS_NS}" node="p"/></iq>')
    assert _adhoc.parse_command(bare) == _adhoc.Request("p")
    assert _adhoc.parse_command(ET.fromstring('<iq xmlns="jabber:client" type="set"/>')) is None


def test_a_running_command_is_executing_with_its_progress_as_a_note() -> None:
    from libs.bridge.protocol import Progress
    from libs.bridge.xmpp._adhoc import COMMANDS_NS, running_element

    element = running_element("resize", "s1", Progress(0.4, "resized 40 of 100"))
    assert (element.get("node"), element.get("sessionid"), element.get("status")) == ("resize", "s1", "executing")
    note = element.find(f"{{{COMMANDS_NS}}}note")
    assert note is not None and (note.get("type"), note.text) == ("info", "running: 40% resized 40 of 100")
    actions = element.find(f"{{{COMMANDS_NS}}}actions")
    assert actions is not None and actions.get("execute") == "next"
    assert actions.find(f"{{{COMMANDS_NS}}}next") is not None
    unknown = running_element("resize", "s1", None).find(f"{{{COMMANDS_NS}}}note")
    assert unknown is not None and unknown.text == "running"
