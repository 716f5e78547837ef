"""XEP-0050 ad-hoc commands on a real Prosody (issue #14, point 3): a plain slixmpp client with
slixmpp's own ``xep_0050`` client side lists a worker's commands, runs a typed one through its
data form, sees a bad value as an error note naming the field, cancels, and runs a command
without arguments at once; a stranger of a private worker is refused. poezio, the Debian
console client, runs one under tmux (marked slow)."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

import pytest
from slixmpp.exceptions import IqError

from libs.bridge import APISpecs, App, load_config
from tests.support.plain import PlainClient, plain_clients

pytestmark = pytest.mark.core  # runs on every server (./run test-ejabberd: a 2-node ejabberd cluster)

COMMANDS_NS = "http://jabber.org/protocol/commands"
DISCO_INFO = "http://jabber.org/protocol/disco#info"


class Shape(enum.Enum):
    SQUARE = "square"
    ROUND = "round"


def install(app: App) -> None:
    @app.command("paint", description="paint a picture")
    async def paint(width: int, shiny: bool = False, shape: Shape = Shape.SQUARE,
                    mode: Literal["fast", "fine"] = "fast", tags: list[str] | None = None,
                    ids: list[int] | None = None, *, specs: APISpecs) -> dict[str, Any]:
        return {"width": width, "shiny": shiny, "shape": shape.value, "mode": mode, "tags": tags, "ids": ids,
                "by": specs.role}

    @app.command("boom", description="always fails")
    async def boom() -> dict[str, Any]:
        raise ValueError("no luck")

    @app.command("secret", description="owner only", access="owner")
    async def secret() -> dict[str, Any]:
        return {"ok": True}


@pytest.fixture
async def worker(prosody, accounts) -> AsyncIterator[App]:
    env = {**prosody.env("worker", accounts["worker"][1]), "QE_ALLOW": accounts["client"][0]}
    app = App(resource="adhoc", config=load_config(env), exit_on_fatal=False, keepalive=0)
    install(app)
    await app.wait_online(10)
    yield app
    await app.close(2)


class AdhocClient(PlainClient):
    """A plain slixmpp client with slixmpp's XEP-0030/0004/0050 plugins, as any XMPP tool."""

    def __init__(self, jid: str, password: str, host: str, port: int) -> None:
        super().__init__(jid, password, host, port, plugins=("xep_0030", "xep_0004", "xep_0050"))

    async def commands(self, jid: str) -> dict[str, str]:
        items = (await self.xmpp.plugin["xep_0050"].get_commands(jid, timeout=5))["disco_items"]["items"]
        return {node: name for _jid, node, name in items}

    async def send(self, jid: str, node: str, action: str = "execute", sessionid: str | None = None,
                   values: dict[str, Any] | None = None) -> Any:
        payload = None
        if values is not None:
            payload = self.xmpp.plugin["xep_0004"].make_form(ftype="submit")
            for var, value in values.items():
                payload.add_field(var=var, value=value)
        iq = await self.xmpp.plugin["xep_0050"].send_command(jid, node, action=action, sessionid=sessionid,
                                                               payload=payload, timeout=5)
        return iq["command"]


def notes(command: Any) -> list[tuple[str, str]]:
    return [(kind, text) for kind, text in command["notes"]]


def result(command: Any) -> dict[str, str]:
    """The result form's fields, read from the XML (slixmpp's form stanza lists a result's
    fields differently by version)."""
    (form,) = command.xml.findall("{jabber:x:data}x")
    assert form.get("type") == "result"
    return {f.get("var"): "\n".join(v.text or "" for v in f.findall("{jabber:x:data}value"))
            for f in form.findall("{jabber:x:data}field")}


@pytest.fixture
async def adhoc(prosody, accounts) -> AsyncIterator[Callable[[str], Awaitable[AdhocClient]]]:
    async with plain_clients(AdhocClient, prosody, accounts) as connect:
        yield connect


async def test_commands_are_listed_with_the_features_xep_0050_requires(worker, adhoc) -> None:
    client = await adhoc("client")
    assert await client.commands(worker.jid) == {"boom": "always fails", "commands":
                                                 "the commands you may run here, with their descriptions and "
                                                 "arguments (JSON Schema)",
                                                 "info": "this worker's JID, version, uptime, commands and request "
                                                 "counters",
                                                 "metrics": "this worker's Prometheus metrics: {\"text\": "
                                                 "<text exposition>}; with {\"format\": \"json\"} the same "
                                                 "numbers as JSON (owner and partners only)",
                                                 "paint": "paint a picture",
                                                 "ping": "QE's liveness check: {\"pong\": true, \"environment\": "
                                                 "\"python\"}"}
    owner = await adhoc("worker")
    assert "secret" in await owner.commands(worker.jid)
    disco = client.xmpp.plugin["xep_0030"]
    info = (await disco.get_info(jid=worker.jid, timeout=5))["disco_info"]
    assert COMMANDS_NS in info["features"]
    node = (await disco.get_info(jid=worker.jid, node="paint", timeout=5))["disco_info"]
    assert {COMMANDS_NS, "jabber:x:data", DISCO_INFO} <= set(node["features"])
    assert ("automation", "command-node", None, "paint a picture") in {tuple(i) for i in node["identities"]}


async def test_a_typed_command_runs_through_its_form(worker, adhoc) -> None:
    client = await adhoc("client")
    first = await client.send(worker.jid, "paint")
    assert first["status"] == "executing" and first["sessionid"]
    form = first["form"]
    assert form["type"] == "form" and form["title"] == "paint a picture"
    fields = form.get_fields()
    assert list(fields) == ["width", "shiny", "shape", "mode", "tags", "ids"]
    assert (fields["width"]["type"], fields["width"]["required"]) == ("text-single", True)
    assert (fields["shiny"]["type"], fields["shiny"]["value"]) == ("boolean", False)
    assert fields["shape"]["type"] == "list-single" and fields["shape"]["value"] == "square"
    assert [o["value"] for o in fields["shape"]["options"]] == ["square", "round"]
    assert [o["value"] for o in fields["mode"]["options"]] == ["fast", "fine"]
    assert fields["tags"]["type"] == "text-multi" and fields["ids"]["type"] == "text-multi"

    done = await client.send(worker.jid, "paint", "complete", first["sessionid"],
                             {"width": "7", "shiny": True, "shape": "round", "mode": "fine", "tags": ["a", "b c"],
                              "ids": ["1", "2"]})
    assert done["status"] == "completed" and notes(done) == []
    assert result(done) == {"width": "7", "shiny": "true", "shape": "round", "mode": "fine",
                            "tags": '["a", "b c"]', "ids": "[1, 2]", "by": "partner"}
    # finished: the session is gone at once
    with pytest.raises(IqError) as gone:
        await client.send(worker.jid, "paint", "complete", first["sessionid"], {"width": "1"})
    assert gone.value.iq["error"]["condition"] == "bad-request"
    assert not worker.transport.adhoc._sessions  # type: ignore[union-attr]


async def test_a_bad_value_is_an_error_note_naming_the_field_and_the_form_again(worker, adhoc) -> None:
    client = await adhoc("client")
    first = await client.send(worker.jid, "paint")
    again = await client.send(worker.jid, "paint", "complete", first["sessionid"], {"width": "wide"})
    assert again["status"] == "executing" and again["sessionid"] == first["sessionid"]
    ((kind, text),) = notes(again)
    assert kind == "error" and text.startswith("bad-request: width: Input should be a valid integer")
    assert again["form"].get_fields()["width"]["value"] == "wide"
    done = await client.send(worker.jid, "paint", "complete", first["sessionid"], {"width": "3"})
    assert done["status"] == "completed" and result(done)["width"] == "3"


async def test_a_failing_command_completes_with_an_error_note(worker, adhoc) -> None:
    client = await adhoc("client")
    done = await client.send(worker.jid, "boom")  # no arguments: runs at once
    assert done["status"] == "completed"
    assert notes(done) == [("error", "handler-error: 'boom' failed: ValueError: no luck")]


async def test_a_command_without_arguments_runs_at_once(worker, adhoc) -> None:
    client = await adhoc("client")
    done = await client.send(worker.jid, "ping")
    assert done["status"] == "completed"
    assert result(done) == {"pong": "true", "environment": "python"}


async def test_cancel_ends_the_session(worker, adhoc) -> None:
    client = await adhoc("client")
    first = await client.send(worker.jid, "paint")
    cancelled = await client.send(worker.jid, "paint", "cancel", first["sessionid"])
    assert cancelled["status"] == "canceled"
    with pytest.raises(IqError) as gone:
        await client.send(worker.jid, "paint", "complete", first["sessionid"], {"width": "1"})
    assert gone.value.iq["error"]["condition"] == "bad-request"
    assert gone.value.iq.xml.find(f".//{{{COMMANDS_NS}}}bad-sessionid") is not None


async def test_refusals(worker, adhoc) -> None:
    stranger = await adhoc("stranger")
    with pytest.raises(IqError) as refused:
        await stranger.send(worker.jid, "ping")
    assert (refused.value.iq["error"]["condition"], refused.value.iq["error"]["type"]) == ("forbidden", "auth")
    with pytest.raises(IqError) as hidden:
        await stranger.commands(worker.jid)
    assert hidden.value.iq["error"]["condition"] == "service-unavailable"  # as disco of a private worker
    client = await adhoc("client")
    with pytest.raises(IqError) as owners:
        await client.send(worker.jid, "secret")
    assert owners.value.iq["error"]["condition"] == "item-not-found"  # as its disco node


async def test_a_long_command_shows_its_progress_as_notes_and_can_be_cancelled(worker, adhoc, monkeypatch):
    """XEP-0050 has no progress element: a command still running after a moment is answered
    ``executing`` with its latest report as an info note; the requester asks again with
    ``execute`` on the session (the result once it ended), or cancels it."""
    from libs.bridge import xmpp as adapter

    monkeypatch.setattr(adapter, "_ADHOC_WAIT", 0.05)
    release, cancelled = asyncio.Event(), asyncio.Event()

    @worker.command("slow", description="takes its time")
    async def slow(*, specs: APISpecs) -> dict[str, Any]:
        await specs.progress(0.5, "half way")
        try:
            await release.wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {"done": "yes"}

    client = await adhoc("client")
    first = await client.send(worker.jid, "slow")
    assert (first["status"], notes(first)) == ("executing", [("info", "running: 50% half way")])
    again = await client.send(worker.jid, "slow", sessionid=first["sessionid"])
    assert again["status"] == "executing"  # still running
    release.set()
    while (done := await client.send(worker.jid, "slow", sessionid=first["sessionid"]))["status"] == "executing":
        await asyncio.sleep(0.02)  # asking again, as a client's "refresh" would
    assert done["status"] == "completed" and result(done) == {"done": "yes"}
    with pytest.raises(IqError):  # the session ended with its result
        await client.send(worker.jid, "slow", sessionid=first["sessionid"])

    release.clear()
    started = await client.send(worker.jid, "slow")
    assert started["status"] == "executing"
    stopped = await client.send(worker.jid, "slow", action="cancel", sessionid=started["sessionid"])
    assert stopped["status"] == "canceled"
    await asyncio.wait_for(cancelled.wait(), 10)  # the handler was cancelled on the worker


# -- poezio (Debian's console client) under tmux ----------------------------------------------------


class Screen:
    """A program in a detached tmux session on a socket of its own: keys in, the screen out."""

    def __init__(self, socket: str) -> None:
        self.socket = socket

    async def tmux(self, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec("tmux", "-L", self.socket, *args, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 10)
        assert proc.returncode == 0, err.decode()
        return out.decode()

    async def text(self) -> str:
        return await self.tmux("capture-pane", "-p", "-t", "main")

    async def wait_for(self, *wanted: str, timeout: float = 15) -> str:
        """The screen once it shows every one of ``wanted`` (polled: a pane has no events)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            screen = await self.text()
            if all(w in screen for w in wanted):
                return screen
            if loop.time() > end:
                raise AssertionError(f"not on the screen within {timeout} s: {wanted}\n{screen}")
            await asyncio.sleep(0.1)

    async def wait_line(self, predicate: Callable[[str], bool], timeout: float = 15) -> str:
        """The first line of the screen for which ``predicate`` holds, once there is one."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            screen = await self.text()
            found = [line for line in screen.splitlines() if predicate(line)]
            if found:
                return found[0]
            if loop.time() > end:
                raise AssertionError(f"no such line on the screen within {timeout} s\n{screen}")
            await asyncio.sleep(0.1)

    async def key(self, *keys: str) -> None:
        for key in keys:  # one at a time: poezio drops a burst of characters read at once
            await self.tmux("send-keys", "-t", "main", key)

    async def type(self, text: str) -> None:
        """Type ``text`` a character at a time, each once the input line shows the one before
        (poezio loses characters that arrive in one burst)."""
        for i, ch in enumerate(text):
            await self.tmux("send-keys", "-t", "main", *(("Space",) if ch == " " else ("-l", ch)))
            if ch == " ":
                continue
            shown = text[: i + 1].rsplit(" ", 1)[-1]
            for _ in range(2):  # a key read while poezio handles a stanza is sometimes lost (seen on
                try:            # ejabberd, about 1 run in 5): type it once more if it never shows
                    await self.wait_for(shown, timeout=3)
                    break
                except AssertionError:
                    await self.tmux("send-keys", "-t", "main", "-l", ch)
            else:
                await self.wait_for(shown)


@pytest.fixture
async def poezio_worker(prosody, accounts) -> AsyncIterator[App]:
    """A worker whose command sorts first, so that poezio has it selected at once (arrow keys
    in a burst may be lost, and the selection is not visible in plain text)."""
    env = {**prosody.env("worker", accounts["worker"][1]), "QE_ALLOW": accounts["client"][0]}
    app = App(resource="poezio", config=load_config(env), exit_on_fatal=False, keepalive=0)

    @app.command("adjust", description="adjust a picture")
    async def adjust(width: int, shiny: bool = False, *, specs: APISpecs) -> dict[str, Any]:
        return {"width": width, "shiny": shiny, "by": specs.role}

    await app.wait_online(10)
    yield app
    await app.close(2)


@pytest.mark.slow
async def test_poezio_runs_a_command_through_its_form(poezio_worker, prosody, accounts) -> None:
    """poezio 0.14 (Debian 12): ``/ad-hoc JID`` lists the commands, Enter opens the form of the
    one selected, Ctrl+Y sends it, and the result form shows the answer."""
    worker = poezio_worker
    import os
    import shutil
    import tempfile

    if shutil.which("poezio") is None or shutil.which("tmux") is None:
        pytest.skip("needs poezio and tmux (apt-get install poezio tmux)")
    # poezio is run as an ordinary user (as root it refuses to start as usual); its home must
    # be readable by that user, which pytest's tmp_path (0700, root's) is not; COLUMNS and LINES (set
    # under pytest) would override the pane's size in curses
    home = tempfile.mkdtemp(prefix="poezio-", dir="/tmp")
    socket = f"qe-adhoc-{os.getpid()}"
    screen = Screen(socket)
    pane: int | None = None
    try:
        config = os.path.join(home, ".config", "poezio")
        os.makedirs(config)
        jid, password = accounts["client"]
        with open(os.path.join(config, "poezio.cfg"), "w") as cfg:
            cfg.write(f"[Poezio]\njid = {jid}\npassword = {password}\ncustom_host = {prosody.host}\n"
                      f"custom_port = {prosody.port}\nforce_encryption = false\n")
        for root, dirs, files in os.walk(home):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.chmod(name, 0o777)
        env = [f"HOME={home}", f"XDG_CONFIG_HOME={home}/.config", f"XDG_DATA_HOME={home}/.local/share",
               f"XDG_CACHE_HOME={home}/.cache"]
        as_user = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
        command = ["env", "-u", "COLUMNS", "-u", "LINES", *env, *as_user, "poezio"]
        await screen.tmux("new-session", "-d", "-s", "main", "-x", "160", "-y", "45", " ".join(command))
        pane = int((await screen.tmux("list-panes", "-t", "main", "-F", "#{pane_pid}")).split()[0])
        await screen.wait_for("Authentication success", "Your JID is")
        await screen.type(f"/ad-hoc {worker.jid}")
        await screen.key("Enter")
        # the list is drawn while it loads: wait for its last command before reading it
        await screen.wait_line(lambda line: line.count("│") >= 1 and line.split("│")[1].startswith("ping "))
        listed = await screen.wait_for(f"Ad-hoc commands of JID {worker.jid}", "adjust a picture")
        nodes = [line.split("│")[1].split()[0] for line in listed.splitlines()
                 if line.count("│") >= 1 and line.split("│")[1].strip()]
        assert nodes[:7] == ["Node", "adjust", "commands", "info", "metrics", "ping", "Ad-hoc"], listed
        await screen.key("Enter")  # the first is selected
        await screen.wait_for("adjust a picture", "Width", "Shiny", "Ctrl+Y: send form")
        await screen.key("7")
        await screen.wait_line(lambda line: "Width" in line and line.rstrip().endswith("7"))
        await screen.key("Down")
        await screen.wait_for("change the value between True and False")  # on Shiny now
        await screen.key("Right")
        await screen.wait_line(lambda line: "Shiny" in line and "True" in line)
        await screen.key("C-y")
        await screen.wait_for("partner")  # the result form: the worker's answer
        assert (await screen.wait_line(lambda line: "│width" in line)).rstrip().endswith("7")
        assert (await screen.wait_line(lambda line: "│shiny" in line)).rstrip().endswith("true")
    finally:
        if pane is not None:  # poezio ignores the hang-up of a killed tmux and spins on: end its group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pane, signal.SIGKILL)
        proc = await asyncio.create_subprocess_exec("tmux", "-L", socket, "kill-server",
                                                    stderr=asyncio.subprocess.DEVNULL)
        await asyncio.wait_for(proc.wait(), 10)
        shutil.rmtree(home, ignore_errors=True)
