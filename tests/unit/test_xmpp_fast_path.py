"""The adapter's fast paths, on a slixmpp client fed by hand (no server):

- API requests are taken by an incoming filter, before slixmpp matches the stanza against
  all its handlers; everything else still goes through slixmpp as before;
- answers are written at once when slixmpp's send queue is idle, with the same bytes and the
  same XEP-0198 accounting as through the queue; otherwise they go through the queue.
"""

from __future__ import annotations

import asyncio
import socket
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import Any

import pytest
import slixmpp

from libs.bridge.protocol import NS, ApiError, ApiResult
from tests.support.offline import Offline, detach, feed

API = f"{{{NS}}}api"
SM = "urn:xmpp:sm:3"


@pytest.fixture
async def offline() -> AsyncIterator[Offline]:
    o = Offline()
    yield o
    await detach(o.client)


@pytest.fixture
async def offline_sm() -> AsyncIterator[Offline]:
    o = Offline(sm=True)
    yield o
    await detach(o.client)


def api_iq(kind: str = "set", iq_id: str = "a1", sender: str = "caller@localhost/cli", text: str = '{"cmd":"ping"}') -> str:
    return f"<iq type='{kind}' id='{iq_id}' from='{sender}' to='worker@localhost/python'><api xmlns='{NS}'>{text}</api></iq>"


async def a_pass() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


# -- incoming ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["set", "get"])
async def test_api_request_reaches_on_request_without_handler_matching(offline: Offline, kind: str) -> None:
    # a get too: the dispatcher answers it (bad-request), so its caller learns why
    feed(offline.client, api_iq(kind, text="{&quot;cmd&quot;:&quot;ping&quot;}"))
    assert offline.requests == [("a1", "caller@localhost/cli", '{"cmd":"ping"}')]
    assert offline.iq_types == [kind]
    assert offline.seen_by_handlers == []


async def test_sender_is_normalised_as_slixmpp_does(offline: Offline) -> None:
    feed(offline.client, api_iq(sender="Caller@LocalHost/Mixed-Case"))
    assert offline.requests[0][1] == str(slixmpp.JID("Caller@LocalHost/Mixed-Case")) == "caller@localhost/Mixed-Case"


async def test_empty_api_element_is_empty_text(offline: Offline) -> None:
    feed(offline.client, f"<iq type='set' id='e' from='c@localhost/x'><api xmlns='{NS}'/></iq>")
    assert offline.requests == [("e", "c@localhost/x", "")]


async def test_other_stanzas_go_through_slixmpp_as_before(offline: Offline) -> None:
    feed(offline.client, api_iq("result", iq_id="r1"))  # an answer, not a request
    feed(offline.client, "<iq type='set' id='n1' from='c@localhost/x'><query xmlns='jabber:iq:version'/></iq>")
    feed(offline.client, "<message from='c@localhost/x' type='chat'><body>hi</body></message>")
    assert offline.requests == []
    assert [x.get("id") for x in offline.seen_by_handlers] == ["r1", "n1", None]
    # the IQ nobody handles still gets slixmpp's feature-not-implemented
    (reply,) = await offline.sock.wait_for(1)
    assert reply.get("id") == "n1" and reply.get("type") == "error"
    assert reply.find("error/{urn:ietf:params:xml:ns:xmpp-stanzas}feature-not-implemented") is not None


async def test_a_failing_request_callback_gets_an_error_reply_and_the_stream_goes_on(offline: Offline) -> None:
    offline.raise_on_request = RuntimeError("bug")
    feed(offline.client, api_iq(iq_id="bad"))
    (reply,) = await offline.sock.wait_for(1)
    assert reply.get("id") == "bad" and reply.get("type") == "error"
    offline.raise_on_request = None
    feed(offline.client, api_iq(iq_id="good"))
    assert [r[0] for r in offline.requests] == ["good"]


async def test_xep_0198_still_counts_requests_taken_early(offline_sm: Offline) -> None:
    plugin = offline_sm.client.plugin["xep_0198"]
    before = plugin.handled
    feed(offline_sm.client, api_iq(iq_id="1"))
    feed(offline_sm.client, api_iq(iq_id="2"))
    feed(offline_sm.client, "<presence from='c@localhost/x'/>")
    assert plugin.handled == before + 3
    assert len(offline_sm.requests) == 2


async def test_without_quickack_acks_go_at_the_end_of_the_loop_pass(offline_sm: Offline) -> None:
    offline_sm.transport._ack_delay = 0.0  # where the kernel cannot ACK each read at once
    feed(offline_sm.client, api_iq(iq_id="1"))
    feed(offline_sm.client, f"<r xmlns='{SM}'/>")
    feed(offline_sm.client, f"<r xmlns='{SM}'/>")
    assert offline_sm.sock.written == []
    await a_pass()
    assert offline_sm.sock.written == [b'<a xmlns="urn:xmpp:sm:3" h="1" />']
    feed(offline_sm.client, f"<r xmlns='{SM}'/>")  # a later request gets its own answer
    await a_pass()
    assert offline_sm.sock.written[1:] == [b'<a xmlns="urn:xmpp:sm:3" h="1" />']


async def test_without_quickack_the_ack_rides_in_the_write_of_an_answer(offline_sm: Offline) -> None:
    """With Nagle on the server, a lone <r/> left unanswered holds the server's next write
    to us; answering in the same write as the result costs no extra stanza or packet."""
    offline_sm.transport._ack_delay = 0.0
    feed(offline_sm.client, api_iq(iq_id="1") + f"<r xmlns='{SM}'/>")
    answer = ApiResult("1", "caller@localhost/cli", "{}")
    offline_sm.transport.send_answer(answer)
    assert offline_sm.sock.written == [queued_bytes(offline_sm.client, answer) + b'<a xmlns="urn:xmpp:sm:3" h="1" />']
    await a_pass()
    assert len(offline_sm.sock.written) == 1  # not answered twice


@pytest.mark.skipif(not hasattr(socket, "TCP_QUICKACK"), reason="TCP_QUICKACK is Linux only")
async def test_with_quickack_acks_are_coalesced_and_never_ride_with_answers(offline_sm: Offline) -> None:
    """Where the kernel ACKs each read at once, a late <a/> stalls nothing, and one per
    _ACK_DELAY spares the server an <a/> in and an <r/> out per call."""
    assert offline_sm.transport._ack_delay > 0
    feed(offline_sm.client, api_iq(iq_id="1") + f"<r xmlns='{SM}'/>")
    answer = ApiResult("1", "caller@localhost/cli", "{}")
    offline_sm.transport.send_answer(answer)
    feed(offline_sm.client, f"<r xmlns='{SM}'/>")
    await a_pass()
    assert offline_sm.sock.written == [queued_bytes(offline_sm.client, answer)]
    stanzas = await offline_sm.sock.wait_for(2)
    assert [s.tag for s in stanzas] == ["iq", f"{{{SM}}}a"] and stanzas[1].get("h") == "1"


class _SocketSpy:
    def __init__(self) -> None:
        self.options: list[tuple[int, int, int]] = []

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.options.append((level, option, value))


@pytest.mark.skipif(not hasattr(socket, "TCP_QUICKACK"), reason="TCP_QUICKACK is Linux only")
async def test_every_read_is_acknowledged_at_once_by_the_kernel(offline: Offline) -> None:
    spy = offline.sock.socket = _SocketSpy()
    seen_when_acked: list[int] = []
    spy.setsockopt = lambda *args: (seen_when_acked.append(len(offline.requests)), _SocketSpy.setsockopt(spy, *args))
    feed(offline.client, api_iq(iq_id="1"))
    feed(offline.client, "<presence from='c@localhost/x'/>")
    quickack = (socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    assert spy.options == [quickack, quickack]
    assert seen_when_acked == [1, 1]  # after the read was handled: an answer written in it carries the ACK


# -- outgoing ---------------------------------------------------------------------------------


def queued_bytes(client: slixmpp.ClientXMPP, answer: ApiResult | ApiError) -> bytes:
    """What slixmpp's own send path writes for the answer, built the way it was before."""
    iq = client.Iq()
    iq["id"], iq["to"] = answer.id, answer.to
    if isinstance(answer, ApiResult):
        iq["type"] = "result"
    else:
        iq["type"] = "error"
        iq["error"]["condition"] = answer.condition
        iq["error"]["type"] = "wait" if answer.code == "expired" else "cancel"
        iq["error"]["text"] = answer.message
    el = ET.SubElement(iq.xml, API)
    el.text = answer.payload
    from slixmpp.xmlstream.tostring import tostring

    return tostring(iq.xml, xmlns=client.default_ns, stream=client, top_level=True).encode()


@pytest.mark.parametrize("answer", [
    ApiResult("id-1", "caller@localhost/cli", '{"pong":true,"s":"<&>\'\\""}'),
    ApiError("id-2", "caller@localhost/cli", "expired", "the request's deadline passed"),
    ApiError("id-3", "caller@localhost/cli", "unknown-command", "unknown command 'x' <&>"),
])
async def test_answer_is_written_at_once_with_the_same_bytes(offline: Offline, answer: ApiResult | ApiError) -> None:
    offline.transport.send_answer(answer)
    assert offline.sock.written == [queued_bytes(offline.client, answer)]  # no loop pass needed


async def test_xep_0198_accounting_is_the_same(offline_sm: Offline) -> None:
    plugin = offline_sm.client.plugin["xep_0198"]
    seq = plugin.seq
    for n in range(20):  # window 20: the 20th stanza is preceded by a request for an ack
        offline_sm.transport.send_answer(ApiResult(str(n), "c@localhost/x", "{}"))
    assert plugin.seq == seq + 20
    assert [s.xml.get("id") for _, s in plugin.unacked_queue][-20:] == [str(n) for n in range(20)]
    written = offline_sm.sock.written
    assert len(written) == 21
    assert written[19].startswith(b"<r ") and b'id="19"' in written[20]


async def test_queued_stanzas_keep_their_order(offline: Offline) -> None:
    offline.client.send_presence()  # waits in slixmpp's queue for the next loop pass
    offline.transport.send_answer(ApiResult("after", "c@localhost/x", "{}"))
    assert offline.sock.written == []
    stanzas = await offline.sock.wait_for(2)
    assert [s.tag for s in stanzas] == ["presence", "iq"]  # written in the stream's default namespace


async def test_async_out_filter_means_the_queue(offline: Offline) -> None:
    seen: list[str] = []

    async def out_filter(stanza: Any) -> Any:
        seen.append(stanza["id"])
        return stanza

    offline.client.add_filter("out", out_filter)
    offline.transport.send_answer(ApiResult("x1", "c@localhost/x", "{}"))
    assert offline.sock.written == []
    (iq,) = await offline.sock.wait_for(1)
    assert iq.get("id") == "x1" and seen == ["x1"]
    offline.client.del_filter("out", out_filter)
    offline.transport.send_answer(ApiResult("x2", "c@localhost/x", "{}"))
    assert len(offline.sock.written) == 2  # filters are looked at again when they change


async def test_sync_filter_dropping_the_stanza_drops_it(offline: Offline) -> None:
    offline.client.add_filter("out", lambda stanza: None)
    offline.transport.send_answer(ApiResult("x", "c@localhost/x", "{}"))
    await a_pass()
    assert offline.sock.written == []


async def test_before_the_session_answers_wait_as_slixmpp_makes_them(offline: Offline) -> None:
    offline.client._session_started = False
    offline.transport.send_answer(ApiResult("early", "c@localhost/x", "{}"))
    await a_pass()
    assert offline.sock.written == []  # slixmpp holds stanzas until the session starts


async def test_without_a_connection_the_answer_goes_to_slixmpp(offline: Offline, caplog: pytest.LogCaptureFixture) -> None:
    sock = offline.sock
    offline.client.transport = None  # the connection is gone
    answer = ApiResult("lost", "c@localhost/x", "{}")
    offline.transport.send_answer(answer)  # must not raise
    assert offline.client.waiting_queue.qsize() == 1  # queued, as client.send() does: slixmpp decides
    offline.client.transport = sock  # back before the queue's next pass: the queue writes it
    await sock.wait_for(1)
    assert sock.written == [queued_bytes(offline.client, answer)]
    assert "Exception raised in send queue" not in caplog.text


# -- our own calls: the request is written at once, its answer taken early ---------------------


async def test_call_is_written_at_once_and_its_answer_taken_before_handler_matching(offline: Offline) -> None:
    call = asyncio.ensure_future(offline.transport.request("other@localhost/w", '{"cmd":"ping"}', timeout=2))
    await asyncio.sleep(0)
    (sent,) = offline.sock.stanzas()
    assert sent.get("type") == "set" and sent.get("to") == "other@localhost/w"
    assert sent.find(API).text == '{"cmd":"ping"}'  # type: ignore[union-attr]
    feed(offline.client, f"<iq type='result' id='{sent.get('id')}' from='other@localhost/w'>"
                         f"<api xmlns='{NS}'>{{&quot;pong&quot;:true}}</api></iq>")
    assert await call == '{"pong":true}'
    assert offline.seen_by_handlers == []
    assert offline.transport._pending == {}


async def test_answer_from_someone_else_is_ignored(offline: Offline, caplog: pytest.LogCaptureFixture) -> None:
    call = asyncio.ensure_future(offline.transport.request("other@localhost/w", "{}", timeout=0.3))
    await asyncio.sleep(0)
    (sent,) = offline.sock.stanzas()
    feed(offline.client, f"<iq type='result' id='{sent.get('id')}' from='mallory@localhost/m'/>")
    assert "ignored an answer" in caplog.text
    from libs.bridge.errors import CallTimeout

    with pytest.raises(CallTimeout):
        await call


async def test_error_answer_is_decoded(offline: Offline) -> None:
    from libs.bridge.errors import RemoteError

    call = asyncio.ensure_future(offline.transport.request("other@localhost/w", "{}", timeout=2))
    await asyncio.sleep(0)
    (sent,) = offline.sock.stanzas()
    feed(offline.client, f"<iq type='error' id='{sent.get('id')}' from='other@localhost/w'><error type='cancel'>"
                         "<service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")
    with pytest.raises(RemoteError) as err:
        await call
    assert err.value.code == "unavailable"


async def test_results_for_ids_we_did_not_send_go_to_slixmpp(offline: Offline) -> None:
    feed(offline.client, "<iq type='result' id='not-ours' from='other@localhost/w'/>")
    assert [x.get("id") for x in offline.seen_by_handlers] == ["not-ours"]
