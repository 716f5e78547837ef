"""Typed commands and the command registry (issue #14, points 1 and 2), without a server:
``CommandSpec``/``CommandRegistry`` directly (binding, errors naming the field, schemas,
access), then through the ``Dispatcher`` and an ``App`` on a ``MemoryNetwork`` (the
``commands`` built-in, ``info``, legacy handlers unchanged, the Nexus decorator)."""

from __future__ import annotations

import enum
import json
import string
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import Field

from libs.bridge import APISpecs, App, MemoryNetwork, ProtocolError, RemoteError, Role
from libs.bridge.access import AccessPolicy
from libs.bridge.commands import LEGACY_SCHEMA, CommandRegistry, CommandSpec
from libs.bridge.dispatch import Dispatcher
from libs.bridge.protocol import ApiError, ApiResult, encode_request

OWNER, FRIEND, STRANGER = "worker@localhost/laptop", "friend@localhost/phone", "stranger@localhost/x"
PONG = {"pong": True, "environment": "python"}


class Size(enum.Enum):
    SMALL = "small"
    LARGE = "large"


async def resize(width: int, height: int = 100, *, specs: APISpecs) -> dict[str, Any]:
    """Resize the picture.

    Longer text that is not the description."""
    return {"w": width, "h": height, "by": specs.role}


async def everything(count: int, ratio: float, name: str, flag: bool, size: Size, mode: Literal["a", "b"],
                     tags: list[str], extra: dict[str, int], maybe: int | None = None,
                     positive: Annotated[int, Field(ge=1)] = 1, small: int = Field(5, le=10)) -> dict[str, Any]:
    return {"size": size.value, "tags": tags, "maybe": maybe, "positive": positive, "small": small}


async def legacy(specs: APISpecs) -> dict[str, Any]:
    return {"body": specs.body}


def bad_request(spec: CommandSpec, body: dict[str, Any]) -> str:
    with pytest.raises(ProtocolError) as err:
        spec.bind(body)
    assert err.value.code == "bad-request"
    return err.value.message


# -- binding -------------------------------------------------------------------------------------


def test_a_typed_handler_gets_its_arguments_validated() -> None:
    spec = CommandSpec.create("resize", resize)
    assert spec.typed and spec.takes_specs and spec.model is not None
    assert spec.bind({"width": 3}) == {"width": 3, "height": 100}
    assert spec.bind({"width": 3, "height": 4}) == {"width": 3, "height": 4}
    assert spec.bind({"width": "3"}) == {"width": 3, "height": 100}  # pydantic's lax mode, as FastAPI


@pytest.mark.parametrize(("body", "message"), [
    ({}, "width: Field required"),
    ({"width": None}, "width: Input should be a valid integer"),
    ({"width": [1]}, "width: Input should be a valid integer"),
    ({"width": 2.5}, "width: Input should be a valid integer, got a number with a fractional part"),
    ({"width": "wide"}, "width: Input should be a valid integer, unable to parse string as an integer"),
    ({"width": 1, "depth": 2}, "depth: Extra inputs are not permitted"),
    ({"width": 1, "specs": 2}, "specs: Extra inputs are not permitted"),  # specs is not an argument
    ({"height": "x"}, "width: Field required; height: Input should be a valid integer, unable to parse string "
                      "as an integer"),
])
def test_a_bad_body_is_bad_request_naming_the_field(body: dict[str, Any], message: str) -> None:
    assert bad_request(CommandSpec.create("resize", resize), body) == message


def test_the_types_json_can_carry() -> None:
    spec = CommandSpec.create("everything", everything)
    body = {"count": 1, "ratio": 2, "name": "n", "flag": True, "size": "large", "mode": "b", "tags": ["x"],
            "extra": {"k": 1}}
    args = spec.bind(body)
    assert args["size"] is Size.LARGE and args["ratio"] == 2.0 and args["maybe"] is None
    assert (args["positive"], args["small"]) == (1, 5)
    assert bad_request(spec, {**body, "size": "huge", "mode": "c", "tags": [1], "positive": 0, "small": 11}) == (
        "size: Input should be 'small' or 'large'; mode: Input should be 'a' or 'b'; tags.0: Input should be a "
        "valid string; positive: Input should be greater than or equal to 1; small: Input should be less than or "
        "equal to 10")


def test_at_most_five_problems_are_named() -> None:
    async def many(a: int, b: int, c: int, d: int, e: int, f: int, g: int) -> None: ...

    message = bad_request(CommandSpec.create("many", many), {})
    assert message.startswith("a: Field required; b: Field required") and message.endswith("; and 2 more")


def test_parameter_names_may_be_any_identifier() -> None:
    """Names of BaseModel's own attributes and private-looking names are arguments like any
    other (the model's fields are aliases of them)."""
    async def odd(json: int, schema: str, model_config: bool, _private: int = 0, *, specs: APISpecs) -> None: ...

    spec = CommandSpec.create("odd", odd)
    assert spec.bind({"json": 1, "schema": "s", "model_config": True}) == {
        "json": 1, "schema": "s", "model_config": True, "_private": 0}
    assert set(spec.schema["properties"]) == {"json", "schema", "model_config", "_private"}
    assert bad_request(spec, {"p0": 1, "json": 1, "schema": "s", "model_config": True}) == \
        "p0: Extra inputs are not permitted"


def test_a_handler_without_parameters_takes_an_empty_body() -> None:
    async def now() -> dict[str, Any]:
        return {}

    spec = CommandSpec.create("now", now)
    assert spec.typed and spec.bind({}) == {}
    assert bad_request(spec, {"x": 1}) == "x: Extra inputs are not permitted"


def test_legacy_handlers_get_specs_and_any_object() -> None:
    """The shapes QE scripts use."""
    async def unannotated(specs):  # type: ignore[no-untyped-def]
        return None

    async def other_name(s: APISpecs) -> None: ...

    for h in (legacy, unannotated, other_name):
        spec = CommandSpec.create("x", h)
        assert not spec.typed and spec.model is None and spec.schema == LEGACY_SCHEMA
        assert spec.bind({"anything": [1, {"goes": None}]}) == {}


async def test_calling_a_spec_passes_specs_as_each_kind_wants() -> None:
    specs = APISpecs(cmd="c", body={"width": 7}, role="owner", jid=OWNER, id="1", uid="worker@localhost",
                     resource="laptop")
    assert await CommandSpec.create("c", resize).call(specs) == {"w": 7, "h": 100, "by": "owner"}
    assert await CommandSpec.create("c", legacy).call(specs) == {"body": {"width": 7}}

    async def no_specs(width: int) -> int:
        return width

    assert await CommandSpec.create("c", no_specs).call(specs) == 7


# -- what cannot be a command ---------------------------------------------------------------------


async def _no_annotation(x, y: int) -> None: ...  # type: ignore[no-untyped-def]
async def _star_args(*values: int) -> None: ...
async def _star_kwargs(**values: int) -> None: ...
async def _positional_only(x: int, /) -> None: ...
async def _positional_specs(x: int, specs: APISpecs) -> None: ...
async def _not_json(x: Callable[[], None]) -> None: ...
def _not_async(specs: APISpecs) -> dict[str, Any]:
    return {}


@pytest.mark.parametrize(("handler", "message"), [
    (_no_annotation, "parameter 'x' needs a type annotation"),
    (_star_args, "*values cannot be checked"),
    (_star_kwargs, "**values cannot be checked"),
    (_positional_only, "'x' is positional-only"),
    (_positional_specs, "make 'specs' keyword-only"),
    (_not_json, "cannot be checked from JSON"),
    (_not_async, "must be an async function"),
    (lambda specs: None, "must be an async function"),
])
def test_what_cannot_be_a_command_is_refused_at_registration(handler: Any, message: str) -> None:
    with pytest.raises(TypeError) as err:
        CommandRegistry().register("cmd", handler)
    assert message in str(err.value)
    assert "'cmd'" in str(err.value)  # which registration


@pytest.mark.parametrize("name", ["", "x" * 201, None])
def test_a_name_is_1_to_200_characters(name: Any) -> None:
    with pytest.raises(ValueError, match="1-200"):
        CommandRegistry().register(name, legacy)


def test_access_names() -> None:
    registry = CommandRegistry()
    assert registry.register("a", legacy).access is Role.USER  # default: whoever the policy admits
    assert registry.register("b", legacy, access="owner").access is Role.OWNER
    assert registry.register("c", legacy, access="Allowed").access is Role.PARTNER  # the old alias
    assert registry.register("d", legacy, access=Role.PUBLIC).access is Role.USER
    with pytest.raises(ValueError, match="not a role"):
        registry.register("e", legacy, access="admin")


# -- schemas and the registry ------------------------------------------------------------------------


def test_the_schema_is_the_json_schema_of_the_arguments() -> None:
    spec = CommandSpec.create("resize", resize)
    assert spec.schema == {
        "additionalProperties": False,
        "properties": {"width": {"title": "Width", "type": "integer"},
                       "height": {"default": 100, "title": "Height", "type": "integer"}},
        "required": ["width"],
        "title": "resize",
        "type": "object",
    }
    schema = CommandSpec.create("everything", everything).schema
    json.dumps(schema, allow_nan=False)  # publishable as it is
    assert schema["properties"]["size"] == {"$ref": "#/$defs/Size"}
    assert schema["$defs"]["Size"]["enum"] == ["small", "large"]
    assert schema["properties"]["mode"]["enum"] == ["a", "b"]
    assert schema["properties"]["positive"]["minimum"] == 1
    assert schema["required"] == ["count", "ratio", "name", "flag", "size", "mode", "tags", "extra"]


def test_the_description_is_given_or_the_docstrings_first_line() -> None:
    registry = CommandRegistry()
    assert registry.register("resize", resize).description == "Resize the picture."
    assert registry.register("resize", resize, description="mine").description == "mine"
    assert registry.register("legacy", legacy).description == ""


def test_visible_to_and_describe_filter_by_role_and_sort_by_name() -> None:
    registry = CommandRegistry()
    registry.register("zeta", legacy)
    registry.register("owners", legacy, access="owner")
    registry.register("partners", resize, access="partner", description="p")
    registry.register("alpha", legacy, access="user")
    assert [s.name for s in registry.visible_to(Role.OWNER)] == ["alpha", "owners", "partners", "zeta"]
    assert [s.name for s in registry.visible_to(Role.PARTNER)] == ["alpha", "partners", "zeta"]
    assert [s.name for s in registry.visible_to(Role.USER)] == ["alpha", "zeta"]
    described = registry.describe(Role.PARTNER)
    assert described[1] == {"name": "partners", "description": "p", "access": "partner",
                            "schema": CommandSpec.create("x", resize).schema | {"title": "partners"}}
    assert [set(d) for d in described] == [{"name", "description", "access", "schema"}] * 3


def test_the_registry_is_a_read_only_mapping_by_name() -> None:
    registry = CommandRegistry()
    first = registry.register("x", legacy)
    assert registry["x"] is first and registry.get("x") is first and registry.get("y") is None
    assert "x" in registry and list(registry) == ["x"] and len(registry) == 1
    assert registry.keys() | {"ping"} == {"x", "ping"}  # what libs/scheduling reads
    second = registry.register("x", resize)
    assert registry["x"] is second and len(registry) == 1  # registering again replaces
    with pytest.raises(TypeError):
        registry["z"] = first  # type: ignore[index]


def test_role_order() -> None:
    assert [[a.at_least(b) for b in Role] for a in Role] == [
        [True, True, True],
        [False, True, True],
        [False, False, True],
    ]


# -- properties ----------------------------------------------------------------------------------

_names = st.text(string.ascii_lowercase + "_", min_size=1, max_size=12).filter(lambda n: n not in ("width", "height"))
_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                     | st.text(max_size=5), lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=8)


@given(st.integers(), st.one_of(st.none(), st.integers()))
def test_integers_bind_as_themselves(width: int, height: int | None) -> None:
    body = {"width": width} if height is None else {"width": width, "height": height}
    assert CommandSpec.create("resize", resize).bind(body) == {"width": width, "height": 100 if height is None
                                                               else height}


@given(st.dictionaries(_names, _json, min_size=1, max_size=4), st.integers())
def test_every_unknown_key_is_named(extra: dict[str, Any], width: int) -> None:
    message = bad_request(CommandSpec.create("resize", resize), {"width": width, **extra})
    for key in sorted(extra)[:5]:
        assert f"{key}: Extra inputs are not permitted" in message


@given(_json)
def test_a_bad_width_is_always_named_and_never_reaches_the_handler(value: Any) -> None:
    spec = CommandSpec.create("resize", resize)
    try:
        args = spec.bind({"width": value})
    except ProtocolError as exc:
        assert exc.code == "bad-request" and exc.message.startswith("width: ")
    else:  # only what pydantic's lax mode takes for an integer: a number without fraction, a bool, a numeral
        assert isinstance(args["width"], int) and not isinstance(args["width"], bool)
        assert isinstance(value, int | float | str)
        if not isinstance(value, str):
            assert args["width"] == value


@given(st.dictionaries(st.text(max_size=8), _json, max_size=5))
def test_legacy_handlers_take_any_body(body: dict[str, Any]) -> None:
    assert CommandSpec.create("legacy", legacy).bind(body) == {}


# -- through the dispatcher -----------------------------------------------------------------------------


def dispatcher(public: bool = False) -> Dispatcher:
    return Dispatcher(AccessPolicy.create("worker@localhost", public=public, allow=["friend@localhost"]))


def result(answer: ApiResult | ApiError) -> dict[str, Any]:
    assert isinstance(answer, ApiResult), answer
    return json.loads(answer.payload)


def error(answer: ApiResult | ApiError, code: str) -> str:
    assert isinstance(answer, ApiError) and answer.code == code, answer
    return answer.message


async def test_a_bad_body_is_answered_before_the_handler_runs_and_counted_failed() -> None:
    d = dispatcher()
    ran: list[int] = []

    async def count(n: int) -> dict[str, Any]:
        ran.append(n)
        return {"n": n}

    d.commands.register("count", count)
    assert error(await d.handle("1", OWNER, encode_request("count", {"n": "x"})), "bad-request").startswith("n: ")
    assert result(await d.handle("2", OWNER, encode_request("count", {"n": 2}))) == {"n": 2}
    assert ran == [2]
    assert (d.stats.received, d.stats.answered, d.stats.failed, d.stats.in_flight) == (2, 1, 1, 0)
    assert d._per_caller == {}


async def test_access_is_checked_before_the_body() -> None:
    d = dispatcher(public=True)
    d.commands.register("resize", resize, access="owner")
    d.commands.register("share", resize, access="partner")
    refused = "you are not allowed to run this command"
    for who in (FRIEND, STRANGER):
        assert error(await d.handle("1", who, encode_request("resize", {"width": "bad"})), "forbidden") == refused
    assert error(await d.handle("2", STRANGER, encode_request("share", {"width": 1})), "forbidden") == refused
    assert result(await d.handle("3", FRIEND, encode_request("share", {"width": 1}))) == {"w": 1, "h": 100,
                                                                                         "by": "partner"}
    assert result(await d.handle("4", OWNER, encode_request("resize", {"width": 1})))["by"] == "owner"
    assert d.stats.forbidden == 3


async def test_a_stranger_of_a_private_worker_learns_nothing_more() -> None:
    d = dispatcher()
    d.commands.register("resize", resize, access="owner")
    unknown = await d.handle("1", STRANGER, encode_request("no-such-command"))
    owners = await d.handle("2", STRANGER, encode_request("resize", {"width": "bad"}))
    assert isinstance(unknown, ApiError) and isinstance(owners, ApiError)
    assert (unknown.code, unknown.message) == (owners.code, owners.message) == (
        "forbidden", "this worker is not public and you are not allowed")


async def test_routing_order_registry_then_onapi_then_built_ins() -> None:
    d = dispatcher()
    taken: list[str] = []

    async def onapi(specs: APISpecs) -> dict[str, Any] | None:
        taken.append(specs.cmd)
        return {"onapi": specs.cmd} if specs.cmd == "mine" else None

    async def builtin(specs: APISpecs) -> dict[str, Any]:
        return {"builtin": True}

    d.onapi = onapi
    d.fallbacks["ping"] = builtin
    d.commands.register("resize", resize)
    assert result(await d.handle("1", OWNER, encode_request("resize", {"width": 2})))["w"] == 2
    assert result(await d.handle("2", OWNER, encode_request("mine"))) == {"onapi": "mine"}
    assert result(await d.handle("3", OWNER, encode_request("ping"))) == {"builtin": True}
    assert taken == ["mine", "ping"]  # the registry's command never reached onapi


async def test_a_scheduled_run_is_refused_like_a_call() -> None:
    """``execute()`` (what scheduled jobs use) applies the command's access and checks the body
    too: a partner cannot have the worker run an owner's command for it."""
    from libs.bridge.protocol import ApiRequest

    d = dispatcher()
    d.commands.register("resize", resize, access="owner")
    refused = await d.execute(ApiRequest(id="job-1", sender=FRIEND, cmd="resize", body={"width": 1}), Role.PARTNER)
    assert error(refused, "forbidden")
    bad = await d.execute(ApiRequest(id="job-2", sender=OWNER, cmd="resize", body={}), Role.OWNER)
    assert error(bad, "bad-request") == "width: Field required"
    assert result(await d.execute(ApiRequest(id="job-3", sender=OWNER, cmd="resize", body={"width": 1}),
                                  Role.OWNER))["w"] == 1


async def test_a_typed_command_returning_nothing_answers_empty() -> None:
    d = dispatcher()

    async def nothing(x: int = 0) -> None:
        return None

    d.commands.register("nothing", nothing)
    assert result(await d.handle("1", OWNER, encode_request("nothing"))) == {}


async def test_a_typed_handler_that_waits_is_still_under_the_deadline() -> None:
    import asyncio

    from libs.bridge.protocol import now_ms

    d = dispatcher()

    async def slow(seconds: float) -> dict[str, Any]:
        await asyncio.sleep(seconds)
        return {"slept": seconds}

    d.commands.register("slow", slow)
    assert result(await d.handle("1", OWNER, encode_request("slow", {"seconds": 0.001},
                                                             deadline_ms=now_ms() + 60_000))) == {"slept": 0.001}
    assert error(await d.handle("2", OWNER, encode_request("slow", {"seconds": 30}, deadline_ms=now_ms() + 20)),
                 "expired")


# -- through an App on a MemoryNetwork -------------------------------------------------------------------


@pytest.fixture
async def make_app(net: MemoryNetwork) -> AsyncIterator[Callable[..., App]]:
    apps: list[App] = []

    def factory(jid: str = "worker@localhost/python", **kwargs: Any) -> App:
        app = App(transport=net.transport(jid, allow=["friend@localhost"]), exit_on_fatal=False, **kwargs)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        await app.close(0.1)


async def test_a_typed_command_over_the_network(make_app, connect) -> None:
    app = make_app()

    @app.command("resize", description="change the size", access="partner")
    async def resize_it(width: int, height: int = 100, *, specs: APISpecs) -> dict[str, Any]:
        return {"w": width, "h": height, "by": specs.uid}

    assert resize_it.__name__ == "resize_it"  # the decorator gives the function back
    await app.wait_online(1)
    friend = await connect("friend@localhost")
    assert await friend.call(app.jid, "resize", {"width": 3}, timeout=2) == {"w": 3, "h": 100,
                                                                           "by": "friend@localhost"}
    with pytest.raises(RemoteError) as err:
        await friend.call(app.jid, "resize", {"width": "wide", "colour": "red"}, timeout=2)
    assert err.value.code == "bad-request"
    assert err.value.remote_message == ("width: Input should be a valid integer, unable to parse string as an "
                                        "integer; colour: Extra inputs are not permitted")


async def test_the_commands_built_in_lists_what_the_caller_may_run(make_app, connect) -> None:
    app = make_app(public=True)
    app.command("resize", description="change the size")(resize)
    app.command("secret", access="owner")(legacy)
    app.command("shared", access="partner")(legacy)

    async def onapi(specs: APISpecs) -> None:
        return None

    app.xmpp.onapi = onapi  # what only onapi knows is not listed
    await app.wait_online(1)
    owner, friend, stranger = [await connect(j) for j in ("worker@localhost", "friend@localhost",
                                                            "stranger@localhost")]
    listed = {who: (await client.call(app.jid, "commands", timeout=2))["commands"]
              for who, client in (("owner", owner), ("friend", friend), ("stranger", stranger))}
    builtins = ["commands", "info", "ping"]  # and metrics, for owner and partners
    assert [c["name"] for c in listed["owner"]] == sorted([*builtins, "metrics", "resize", "secret", "shared"])
    assert [c["name"] for c in listed["friend"]] == sorted([*builtins, "metrics", "resize", "shared"])
    assert [c["name"] for c in listed["stranger"]] == sorted([*builtins, "resize"])
    resize_entry = next(c for c in listed["stranger"] if c["name"] == "resize")
    assert resize_entry == {"name": "resize", "description": "change the size", "access": "user",
                            "schema": app.dispatcher.commands["resize"].schema}
    ping_entry = next(c for c in listed["stranger"] if c["name"] == "ping")
    assert ping_entry["schema"] == {} and ping_entry["access"] == "user" and ping_entry["description"]
    secret = next(c for c in listed["owner"] if c["name"] == "secret")
    assert (secret["access"], secret["schema"]) == ("owner", {"type": "object"})
    # info lists the same names, per caller
    assert (await stranger.call(app.jid, "info", timeout=2))["commands"] == [c["name"] for c in listed["stranger"]]
    assert (await owner.call(app.jid, "info", timeout=2))["commands"] == [c["name"] for c in listed["owner"]]


async def test_a_registered_command_replaces_a_built_in_in_the_list(make_app, connect) -> None:
    app = make_app()

    @app.command("ping", description="my own ping")
    async def ping() -> dict[str, Any]:
        return {"mine": True}

    await app.wait_online(1)
    owner = await connect("worker@localhost")
    assert await owner.call(app.jid, "ping", timeout=2) == {"mine": True}
    pings = [c for c in (await owner.call(app.jid, "commands", timeout=2))["commands"] if c["name"] == "ping"]
    assert [p["description"] for p in pings] == ["my own ping"]


async def test_onapi_may_answer_commands_itself(make_app, connect) -> None:
    app = make_app()

    async def onapi(specs: APISpecs) -> dict[str, Any] | None:
        return {"mine": True} if specs.cmd == "commands" else None

    app.xmpp.onapi = onapi
    await app.wait_online(1)
    owner = await connect("worker@localhost")
    assert await owner.call(app.jid, "commands", timeout=2) == {"mine": True}
    assert await owner.call(app.jid, "ping", timeout=2) == PONG


async def test_the_nexus_decorator_takes_typed_handlers_and_access(make_app, connect) -> None:
    app = make_app()

    @app.nexus.API("add", description="x + y", access="owner")
    async def add(x: int, y: int) -> dict[str, Any]:
        return {"sum": x + y}

    @app.nexus.API("legacy")
    async def old(specs):  # type: ignore[no-untyped-def]
        return {"code": 0, "cmd": specs.cmd}

    await app.wait_online(1)
    owner, friend = await connect("worker@localhost"), await connect("friend@localhost")
    assert await owner.call(app.jid, "add", {"x": 2, "y": 3}, timeout=2) == {"sum": 5}
    assert await friend.call(app.jid, "legacy", {"any": "thing"}, timeout=2) == {"code": 0, "cmd": "legacy"}
    with pytest.raises(RemoteError) as err:
        await friend.call(app.jid, "add", {"x": 2, "y": 3}, timeout=2)
    assert err.value.code == "forbidden"
    with pytest.raises(TypeError, match="async"):
        app.nexus.API("sync")(lambda x: x)
    with pytest.raises(TypeError, match="needs a type annotation"):
        app.command("untyped")(_no_annotation)


async def test_the_app_gives_the_transport_what_each_requester_may_see(make_app) -> None:
    app = make_app()
    app.command("secret", access="owner")(legacy)
    await app.wait_online(1)
    describe = app.transport.describe
    assert describe is not None
    assert "secret" in [c["name"] for c in describe("worker@localhost/other")]
    assert "secret" not in [c["name"] for c in describe("friend@localhost/x")]
    assert describe("stranger@localhost/x") is None  # not public: may not call at all
