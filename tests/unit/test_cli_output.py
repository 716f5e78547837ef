"""What ``qe-worker`` prints for people (``libs._cli_output``), on canned worker answers: the
``commands`` table, and the lines of ``schedule --notify``."""

from __future__ import annotations

import pytest

from libs._cli_output import command_list, commands_table, job_line, run_line

# what the built-in `commands` answers (docs/protocol.md), with the schema shapes a worker may declare
ANSWER = {"commands": [
    {"name": "resize", "description": "Resize an image.\nThe long explanation.", "access": "allowed",
     "schema": {"type": "object", "required": ["url", "width"], "properties": {
         "url": {"type": "string", "description": "where the image is"},
         "width": {"type": "integer", "minimum": 1},
         "format": {"enum": ["png", "jpeg"], "default": "png"},
         "tags": {"type": "array", "items": {"type": "string"}},
         "note": {"type": ["string", "null"], "default": None},
         "mode": {"anyOf": [{"type": "integer"}, {"const": "auto"}]},
     }}},
    {"name": "ping", "description": "Answer {\"pong\": true}.", "access": "public",
     "schema": {"type": "object", "properties": {}, "additionalProperties": False}},
    {"name": "legacy", "access": "owner"},  # no description, no schema (e.g. a QE onapi command)
]}


def test_the_commands_table_lists_commands_sorted_with_their_parameters() -> None:
    assert commands_table(ANSWER) == "\n".join([
        "legacy  owner",
        "    (parameters not described)",
        "ping    public   Answer {\"pong\": true}.",
        "    (no parameters)",
        "resize  allowed  Resize an image.",
        "    url     string                required       where the image is",
        "    width   integer               required",
        '    format  one of "png", "jpeg"  default "png"',
        "    tags    array of string       optional",
        "    note    string|null           default null",
        '    mode    integer|"auto"        optional',
    ])


def test_an_empty_list_and_odd_schemas_do_not_break_the_table() -> None:
    assert commands_table({"commands": []}) == "(no commands)"
    odd = {"commands": [{"name": "x", "access": None, "description": 5,
                         "schema": {"properties": {"a": "not a dict", "b": {"type": 3}}, "required": "a"}}]}
    assert commands_table(odd).splitlines() == ["x  ?", "    a  any  optional", "    b  any  optional"]


@pytest.mark.parametrize("answer", [{}, {"commands": {}}, {"commands": [{"description": "no name"}]},
                                    {"commands": ["ping"]}, [], {"code": 0, "msg": "no api handler"}])
def test_an_answer_that_is_not_a_command_list_is_a_one_line_error(answer) -> None:
    with pytest.raises(ValueError, match="not a command list") as info:
        command_list(answer)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError):
        commands_table(answer)


def test_run_lines() -> None:
    assert run_line({"job": "j1", "cmd": "echo", "scheduled_for": "2026-12-03T09:00:00Z", "ok": True,
                     "result": {"a": "é"}}) == '2026-12-03T09:00:00Z echo ok {"a": "é"}'
    assert run_line({"job": "j1", "cmd": "echo", "scheduled_for": "2026-12-03T09:00:00Z", "ok": False,
                     "error": "handler-error: 'echo' failed: KeyError\nmore"}) == \
        "2026-12-03T09:00:00Z echo failed: handler-error: 'echo' failed: KeyError"


def test_job_lines() -> None:
    assert job_line({"job": "j1", "status": "finished", "run_count": 1, "error_count": 0}) == \
        "job j1 finished after 1 run"
    assert job_line({"job": "j1", "status": "cancelled", "run_count": 3, "error_count": 2,
                     "last_error": "cancelled by a@b/c"}) == "job j1 cancelled after 3 runs (2 failed): cancelled by a@b/c"
    assert job_line({"job": "j1", "status": "gone"}) == "job j1 gone"
