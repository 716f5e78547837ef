"""Group-chat rooms as plain state (``libs.bridge.xmpp._rooms``): the stanza shapes we read
and write, and every rule of joining, rejoining, occupants, messages and payload updates,
without a server. tests/integration/test_rooms_transport.py checks that the adapter carries
the actions out on a real Prosody."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from hypothesis import given
from hypothesis import strategies as st

from libs.bridge.transport import Message
from libs.bridge.xmpp._rooms import (
    MUC_NS,
    SERVICE_NS,
    Configure,
    Deliver,
    FlushAt,
    Joined,
    Note,
    Occupant,
    Phase,
    Refused,
    RoomMessage,
    RoomPresence,
    Rooms,
    SendJoin,
    SendLeave,
    SendPing,
    SendUpdate,
    instant_config,
    join_children,
    parse_message,
    parse_presence,
    room_error,
    update_children,
)

ROOM = "room@conference.localhost"
ME = "me"


def xml(text: str) -> ET.Element:
    return ET.fromstring(text)


def occupant(nick: str, jid: str | None = None, payload: str | None = None, *codes: str,
             kind: str = "available", room: str = ROOM) -> RoomPresence:
    return RoomPresence(room, nick, kind, real_jid=jid, payload=payload, codes=frozenset(codes))


def me(*codes: str, kind: str = "available", nick: str = ME) -> RoomPresence:
    return occupant(nick, f"w@localhost/{nick}", None, "110", *codes, kind=kind)


def error_presence(condition: str, nick: str = ME, text: str | None = None) -> RoomPresence:
    return RoomPresence(ROOM, nick, "error", condition=condition, text=text)


def groupchat(nick: str, body: str | None, delayed: bool = False) -> RoomMessage:
    return RoomMessage(ROOM, nick, "groupchat", body=body, delayed=delayed)


def joined(payload: str | None = None, *others: tuple[str, str]) -> Rooms:
    """Rooms online with ROOM joined at t=0 as ME; ``others`` (nick, jid) listed first."""
    rooms = Rooms()
    rooms.went_online(False, 0.0)
    assert rooms.join(ROOM, ME, payload, 0.0) == [SendJoin(ROOM, ME, payload)]
    for nick, jid in others:
        rooms.presence(occupant(nick, jid), 0.0)
    assert rooms.presence(me(), 0.0) == [Joined(ROOM)]
    return rooms


def phase(rooms: Rooms, room: str = ROOM) -> Phase:
    state = rooms.get(room)
    assert state is not None
    return state.phase


# -- stanzas in -----------------------------------------------------------------------------


def test_parse_an_occupant_presence_as_prosody_sends_it() -> None:
    p = parse_presence(xml(
        "<presence xmlns='jabber:client' from='Room@conference.localhost/b n' to='a@localhost/r'>"
        "<occupant-id xmlns='urn:xmpp:occupant-id:0' id='x'/>"
        f"<service xmlns='{SERVICE_NS}'>{{\"load\": 1}}</service>"
        "<x xmlns='http://jabber.org/protocol/muc#user'><status code='100'/>"
        "<item role='participant' affiliation='none' jid='b@localhost/r'/><status code='110'/></x></presence>"))
    assert p == RoomPresence(ROOM, "b n", "available", real_jid="b@localhost/r", payload='{"load": 1}',
                             codes=frozenset({"100", "110"}))


def test_parse_unavailable_and_an_anonymous_occupant() -> None:
    p = parse_presence(xml(
        "<presence xmlns='jabber:client' type='unavailable' from='room@conference.localhost/b'>"
        "<x xmlns='http://jabber.org/protocol/muc#user'><item role='none' affiliation='none'/></x></presence>"))
    assert p == RoomPresence(ROOM, "b", "unavailable")


def test_parse_an_error_presence_without_the_muc_element() -> None:
    """Prosody's refusal: no MUC <x/>, the condition in the stanza error."""
    p = parse_presence(xml(
        "<presence xmlns='jabber:client' type='error' from='r1@nosuch.localhost/nick'><error type='cancel'>"
        "<not-allowed xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
        "<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>Communication with remote domains is not enabled</text>"
        "</error></presence>"))
    assert p == RoomPresence("r1@nosuch.localhost", "nick", "error", condition="not-allowed",
                             text="Communication with remote domains is not enabled")


def test_subscriptions_and_probes_are_not_room_presences() -> None:
    for kind in ("subscribe", "subscribed", "unsubscribe", "probe"):
        assert parse_presence(xml(f"<presence xmlns='jabber:client' type='{kind}' from='{ROOM}'/>")) is None


def test_parse_group_chat_messages() -> None:
    live = parse_message(xml(f"<message xmlns='jabber:client' type='groupchat' from='{ROOM}/b'><body>hi</body></message>"))
    assert live == RoomMessage(ROOM, "b", "groupchat", body="hi")
    old = parse_message(xml(f"<message xmlns='jabber:client' type='groupchat' from='{ROOM}/b'><body>hi</body>"
                            "<delay xmlns='urn:xmpp:delay' stamp='2026-01-01T00:00:00Z'/></message>"))
    assert old is not None and old.delayed
    subject = parse_message(xml(f"<message xmlns='jabber:client' type='groupchat' from='{ROOM}'><subject/></message>"))
    assert subject == RoomMessage(ROOM, "", "groupchat")
    error = parse_message(xml(
        f"<message xmlns='jabber:client' type='error' from='{ROOM}'><error type='cancel' by='conference.localhost'>"
        "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"))
    assert error == RoomMessage(ROOM, "", "error", condition="item-not-found")


def test_a_private_message_through_a_room_is_chat_not_group_chat() -> None:
    for kind in ("chat", "normal", "headline"):
        assert parse_message(xml(f"<message xmlns='jabber:client' type='{kind}' from='{ROOM}/b'><body>x</body></message>")) is None


# -- stanzas out ----------------------------------------------------------------------------


def test_a_join_asks_for_no_history_and_carries_the_payload() -> None:
    x, service = join_children("load\x00 <1>")
    assert x.tag == f"{{{MUC_NS}}}x"
    history = x.find(f"{{{MUC_NS}}}history")
    assert history is not None and history.attrib == {"maxstanzas": "0"}
    assert service.tag == f"{{{SERVICE_NS}}}service"
    assert service.text == "load\ufffd <1>"  # what XML cannot carry is replaced, not sent
    assert [e.tag for e in join_children(None)] == [f"{{{MUC_NS}}}x"]


def test_an_update_carries_the_payload_only() -> None:
    assert [e.tag for e in update_children("p")] == [f"{{{SERVICE_NS}}}service"]
    assert update_children(None) == []


def test_the_instant_configuration_shows_real_jids() -> None:
    query = instant_config()
    assert query.tag == "{http://jabber.org/protocol/muc#owner}query"
    form = query.find("{jabber:x:data}x")
    assert form is not None and form.get("type") == "submit"
    fields = {f.get("var"): f.findtext("{jabber:x:data}value") for f in form}
    assert fields == {"FORM_TYPE": "http://jabber.org/protocol/muc#roomconfig", "muc#roomconfig_whois": "anyone"}


def test_room_errors_map_to_codes() -> None:
    assert room_error("conflict", None) == ("conflict", "the nick is taken in the room")
    assert room_error("item-not-found", None)[0] == "not-found"
    assert room_error("registration-required", None)[0] == "registration-required"
    assert room_error("not-allowed", "Room creation is restricted") == ("not-allowed", "Room creation is restricted")
    assert room_error("gone", None)[0] == "gone"  # unknown: its own code
    assert room_error(None, None)[0] == "error"


# -- joining --------------------------------------------------------------------------------


def test_a_join_waits_for_the_session_then_goes_out() -> None:
    rooms = Rooms()
    assert rooms.join(ROOM, ME, "p", 0.0) == []
    assert phase(rooms) is Phase.PENDING and ROOM in rooms
    assert rooms.went_online(False, 1.0) == [SendJoin(ROOM, ME, "p")]
    assert phase(rooms) is Phase.JOINING


def test_a_join_while_online_goes_out_at_once() -> None:
    rooms = Rooms()
    rooms.went_online(True, 0.0)
    assert rooms.join(ROOM, ME, None, 0.0) == [SendJoin(ROOM, ME, None)]


def test_occupants_are_reported_then_we_are_in_and_never_reported() -> None:
    rooms = Rooms()
    rooms.went_online(False, 0.0)
    rooms.join(ROOM, ME, None, 0.0)
    assert rooms.presence(occupant("a", "a@localhost/x", "pa"), 0.0) == [Occupant(ROOM, "a", "a@localhost/x", "pa", True)]
    assert rooms.presence(occupant("b"), 0.0) == [Occupant(ROOM, "b", None, None, True)]
    assert rooms.presence(me("100"), 0.0) == [Joined(ROOM)]
    state = rooms.get(ROOM)
    assert state is not None and state.occupants == {"a": "a@localhost/x", "b": None}
    assert rooms.presence(me(), 0.1) == []  # the echo of our own update


def test_our_own_nick_without_status_110_is_us() -> None:
    rooms = Rooms()
    rooms.went_online(False, 0.0)
    rooms.join(ROOM, ME, None, 0.0)
    assert rooms.presence(occupant(ME, "w@localhost/r"), 0.0) == [Joined(ROOM)]


def test_a_nick_the_room_chose_for_us_becomes_ours() -> None:
    rooms = Rooms()
    rooms.went_online(False, 0.0)
    rooms.join(ROOM, ME, None, 0.0)
    assert rooms.presence(me("210", nick="me2"), 0.0) == [Joined(ROOM)]
    assert rooms.message(groupchat("me2", "echo"), 0.0) == []


def test_a_room_we_created_is_configured_before_we_count_it_joined() -> None:
    rooms = Rooms()
    rooms.went_online(False, 0.0)
    rooms.join(ROOM, ME, None, 0.0)
    assert rooms.presence(me("201", "100"), 0.0) == [Configure(ROOM)]
    assert phase(rooms) is Phase.CONFIGURING
    assert rooms.configured(ROOM, 0.1) == [Joined(ROOM)]
    assert rooms.configured(ROOM, 0.1) == []  # a late second answer changes nothing
    assert rooms.configured("other@conference.localhost", 0.1) == []


def test_a_refusal_fails_the_join_with_its_code_and_is_not_retried() -> None:
    rooms = Rooms()
    rooms.went_online(False, 0.0)
    rooms.join(ROOM, ME, None, 0.0)
    assert rooms.presence(error_presence("conflict"), 0.0) == [Refused(ROOM, "conflict", "the nick is taken in the room")]
    state = rooms.get(ROOM)
    assert state is not None and state.phase is Phase.FAILED and state.error == ("conflict", "the nick is taken in the room")
    rooms.went_offline()
    assert rooms.went_online(False, 1.0) == []  # a new session does not retry it
    assert rooms.join(ROOM, "other", None, 2.0) == [SendJoin(ROOM, "other", None)]  # join() does
    assert phase(rooms) is Phase.JOINING


def test_a_refusal_from_the_rooms_bare_jid_counts_too() -> None:
    rooms = Rooms()
    rooms.went_online(False, 0.0)
    rooms.join(ROOM, ME, None, 0.0)
    actions = rooms.presence(error_presence("not-allowed", nick="", text="Room creation is restricted"), 0.0)
    assert actions == [Refused(ROOM, "not-allowed", "Room creation is restricted")]


def test_an_error_about_another_nick_is_not_ours() -> None:
    rooms = Rooms()
    rooms.went_online(False, 0.0)
    rooms.join(ROOM, ME, None, 0.0)
    assert rooms.presence(error_presence("conflict", nick="someone"), 0.0) == []
    assert phase(rooms) is Phase.JOINING


def test_a_refused_room_hears_nothing_more() -> None:
    rooms = Rooms()
    rooms.went_online(False, 0.0)
    rooms.join(ROOM, ME, None, 0.0)
    rooms.presence(error_presence("forbidden"), 0.0)
    assert rooms.presence(occupant("a", "a@localhost/x"), 0.0) == []
    assert rooms.message(groupchat("a", "hi"), 0.0) == []


# -- occupants and messages ---------------------------------------------------------------


def test_an_occupant_leaving_is_reported_with_its_real_jid() -> None:
    rooms = joined(None, ("a", "a@localhost/x"))
    assert rooms.presence(occupant("a", kind="unavailable"), 1.0) == [Occupant(ROOM, "a", "a@localhost/x", None, False)]
    state = rooms.get(ROOM)
    assert state is not None and state.occupants == {}


def test_a_payload_change_of_an_occupant_is_reported() -> None:
    rooms = joined(None, ("a", "a@localhost/x"))
    assert rooms.presence(occupant("a", "a@localhost/x", "busy"), 1.0) == [Occupant(ROOM, "a", "a@localhost/x", "busy", True)]


def test_messages_come_from_the_occupants_real_jid() -> None:
    rooms = joined(None, ("a", "a@localhost/x"))
    assert rooms.message(groupchat("a", "hi"), 1.0) == [Deliver(Message("a@localhost/x", "hi", room=ROOM))]
    assert rooms.message(groupchat("a", "old", delayed=True), 1.0) == [
        Deliver(Message("a@localhost/x", "old", room=ROOM, delayed=True))]
    # a nick we do not know (hidden real JID, or left meanwhile): the occupant JID
    assert rooms.message(groupchat("ghost", "boo"), 1.0) == [Deliver(Message(f"{ROOM}/ghost", "boo", room=ROOM))]


def test_echoes_subjects_and_the_rooms_own_messages_are_dropped() -> None:
    rooms = joined(None, ("a", "a@localhost/x"))
    assert rooms.message(groupchat(ME, "mine"), 1.0) == []
    assert rooms.message(groupchat("a", None), 1.0) == []  # subject only
    assert rooms.message(groupchat("a", ""), 1.0) == []
    assert rooms.message(groupchat("", "the room speaks"), 1.0) == []
    assert rooms.message(RoomMessage("other@conference.localhost", "a", "groupchat", body="x"), 1.0) == []


# -- payload updates ------------------------------------------------------------------------


def test_payload_updates_are_coalesced_and_end_with_the_latest() -> None:
    rooms = joined("p0")
    assert rooms.join(ROOM, ME, "p1", 0.05) == [FlushAt(ROOM, 0.2)]  # the join went out at 0.0
    assert rooms.join(ROOM, ME, "p2", 0.1) == []  # already due at 0.2
    assert rooms.flush(ROOM, 0.2) == [SendUpdate(ROOM, ME, "p2")]
    assert rooms.flush(ROOM, 0.2) == []  # a stale timer
    assert rooms.join(ROOM, ME, "p3", 0.5) == [SendUpdate(ROOM, ME, "p3")]  # quiet long enough: at once
    assert rooms.join(ROOM, ME, "p3", 0.9) == []  # nothing new
    assert rooms.join(ROOM, ME, "p4", 0.6) == [FlushAt(ROOM, 0.7)]
    assert rooms.join(ROOM, ME, "p3", 0.65) == []
    assert rooms.flush(ROOM, 0.7) == []  # back to what was sent: nothing to send


def test_a_payload_changed_while_joining_goes_out_once_joined() -> None:
    rooms = Rooms()
    rooms.went_online(False, 0.0)
    rooms.join(ROOM, ME, "old", 0.0)
    assert rooms.join(ROOM, ME, "new", 0.1) == []
    assert rooms.presence(me(), 0.3) == [Joined(ROOM), SendUpdate(ROOM, ME, "new")]


def test_a_payload_changed_offline_goes_out_on_resumption() -> None:
    rooms = joined("old")
    rooms.went_offline()
    assert rooms.join(ROOM, ME, "new", 1.0) == []
    assert rooms.went_online(True, 2.0) == [SendUpdate(ROOM, ME, "new")]


@given(st.lists(st.tuples(st.floats(0.0, 0.5), st.integers(0, 3)), max_size=30))
def test_updates_never_come_closer_than_the_interval_and_the_last_is_the_latest(
        steps: list[tuple[float, int]]) -> None:
    rooms = joined("p0")
    now, timers, sent = 0.0, [], [(0.0, "p0")]  # the join at 0.0 carried p0

    def run(actions: list[object]) -> None:
        for action in actions:
            if isinstance(action, SendUpdate):
                sent.append((now, action.payload))
            elif isinstance(action, FlushAt):
                timers.append(action.when)

    def run_timers(until: float) -> None:
        nonlocal now
        while timers and min(timers) <= until:
            now = min(timers)
            timers.remove(now)
            run(rooms.flush(ROOM, now))

    latest = "p0"
    for delay, value in steps:
        run_timers(now + delay)
        now += delay
        latest = f"p{value}"
        run(rooms.join(ROOM, ME, latest, now))
    run_timers(float("inf"))
    assert all(b[0] - a[0] >= rooms.update_interval - 1e-9 for a, b in zip(sent, sent[1:]))
    assert sent[-1][1] == latest


# -- sessions -------------------------------------------------------------------------------


def test_a_new_session_joins_every_wanted_room_again_with_the_latest_payload() -> None:
    rooms = joined("p1")
    other = "other@conference.localhost"
    rooms.join(other, "n2", None, 0.0)
    rooms.presence(RoomPresence(other, "n2", "error", condition="forbidden"), 0.0)
    rooms.join(ROOM, ME, "p2", 0.5)
    rooms.went_offline()
    assert rooms.went_online(False, 1.0) == [SendJoin(ROOM, ME, "p2")]  # the refused room is not retried
    assert phase(rooms) is Phase.JOINING


def test_a_resumed_session_sends_nothing_for_rooms_it_kept() -> None:
    rooms = joined("p")
    rooms.went_offline()
    assert rooms.went_online(True, 1.0) == []
    assert phase(rooms) is Phase.JOINED


def test_a_join_asked_for_while_offline_goes_out_on_resumption() -> None:
    rooms = joined()
    rooms.went_offline()
    other = "other@conference.localhost"
    assert rooms.join(other, ME, None, 1.0) == []
    assert rooms.went_online(True, 2.0) == [SendJoin(other, ME, None)]


def test_a_rejoin_reports_only_the_occupants_that_are_gone() -> None:
    rooms = joined(None, ("a", "a@localhost/x"), ("b", "b@localhost/x"))
    rooms.went_offline()
    rooms.went_online(False, 5.0)
    assert rooms.presence(occupant("a", "a@localhost/x"), 5.0) == [Occupant(ROOM, "a", "a@localhost/x", None, True)]
    assert rooms.presence(occupant("c", "c@localhost/x"), 5.0) == [Occupant(ROOM, "c", "c@localhost/x", None, True)]
    assert rooms.presence(me(), 5.0) == [Occupant(ROOM, "b", "b@localhost/x", None, False), Joined(ROOM)]
    state = rooms.get(ROOM)
    assert state is not None and state.occupants == {"a": "a@localhost/x", "c": "c@localhost/x"}


# -- leaving --------------------------------------------------------------------------------


def test_leaving_tells_the_room_and_forgets_it() -> None:
    rooms = joined()
    assert rooms.leave(ROOM) == [SendLeave(ROOM, ME)]
    assert ROOM not in rooms and rooms.get(ROOM) is None
    assert rooms.leave(ROOM) == []
    assert rooms.presence(occupant("a"), 1.0) == []  # a late presence from it


def test_leaving_a_room_never_joined_sends_nothing() -> None:
    rooms = Rooms()
    rooms.join(ROOM, ME, None, 0.0)
    assert rooms.leave(ROOM) == []


def test_leaving_while_offline_is_told_on_resumption_only() -> None:
    rooms = joined()
    rooms.went_offline()
    assert rooms.leave(ROOM) == []
    assert rooms.went_online(True, 1.0) == [SendLeave(ROOM, ME)]
    assert rooms.went_online(True, 2.0) == []
    rooms = joined()
    rooms.went_offline()
    rooms.leave(ROOM)
    assert rooms.went_online(False, 1.0) == []  # a new session was never in it


def test_joining_again_before_the_resumption_cancels_the_leave() -> None:
    rooms = joined()
    rooms.went_offline()
    rooms.leave(ROOM)
    rooms.join(ROOM, ME, None, 1.0)
    assert rooms.went_online(True, 2.0) == [SendJoin(ROOM, ME, None)]


# -- losing a room --------------------------------------------------------------------------


def test_a_room_that_vanished_is_joined_again_once() -> None:
    rooms = joined(None, ("a", "a@localhost/x"))
    gone = RoomMessage(ROOM, "", "error", condition="item-not-found")
    actions = rooms.message(gone, 1.0)
    assert isinstance(actions[0], Note) and actions[1:] == [SendJoin(ROOM, ME, None)]
    assert phase(rooms) is Phase.JOINING
    assert all(isinstance(a, Note) for a in rooms.message(gone, 1.1))  # more errors: no second join
    assert rooms.presence(me(), 1.2) == [Occupant(ROOM, "a", "a@localhost/x", None, False), Joined(ROOM)]


def test_not_acceptable_to_a_presence_update_means_the_room_lost_us() -> None:
    rooms = joined()
    actions = rooms.presence(error_presence("not-acceptable"), 1.0)
    assert actions[1:] == [SendJoin(ROOM, ME, None)]


def test_an_error_from_an_occupant_is_not_the_room_vanishing() -> None:
    rooms = joined()
    assert all(isinstance(a, Note) for a in rooms.message(RoomMessage(ROOM, "a", "error", condition="item-not-found"), 1.0))
    assert phase(rooms) is Phase.JOINED


def test_a_room_that_put_us_out_is_joined_again_unless_it_banned_us() -> None:
    rooms = joined()
    actions = rooms.presence(me("307", kind="unavailable"), 1.0)  # kicked
    assert actions[1:] == [SendJoin(ROOM, ME, None)]
    rooms = joined()
    rooms.went_offline()  # told while going offline: joined on the next session
    assert all(isinstance(a, Note) for a in rooms.presence(me("332", kind="unavailable"), 1.0))
    assert phase(rooms) is Phase.PENDING
    rooms = joined()
    assert rooms.presence(me("301", kind="unavailable"), 1.0) == [Refused(ROOM, "forbidden", "we were banned from the room")]


def test_our_nick_change_is_not_leaving() -> None:
    rooms = joined()
    assert rooms.join(ROOM, "new", None, 1.0) == [SendJoin(ROOM, "new", None)]
    assert rooms.presence(me("303", kind="unavailable"), 1.0) == []
    assert rooms.presence(me(nick="new"), 1.0) == [Joined(ROOM)]
    assert rooms.message(groupchat("new", "echo"), 1.0) == []


def test_a_refused_nick_change_leaves_the_room() -> None:
    rooms = joined()
    rooms.join(ROOM, "taken", None, 1.0)
    assert rooms.presence(error_presence("conflict", nick="taken"), 1.0) == [
        SendLeave(ROOM, ME), Refused(ROOM, "conflict", "the nick is taken in the room")]


def test_a_refused_rejoin_is_tried_again_with_the_next_session() -> None:
    """Prosody shutting down puts every occupant out (333) while we are still connected and
    refuses the rejoin that follows: the room stays wanted."""
    rooms = joined("p", ("a", "a@localhost/x"))
    assert rooms.presence(me("333", kind="unavailable"), 1.0)[1:] == [SendJoin(ROOM, ME, "p")]
    actions = rooms.presence(error_presence("item-not-found"), 1.0)
    assert isinstance(actions[0], Note)
    assert actions[1:] == [Occupant(ROOM, "a", "a@localhost/x", None, False),
                           Refused(ROOM, "not-found", "the room does not exist or is locked")]
    state = rooms.get(ROOM)
    assert state is not None and state.phase is Phase.PENDING and state.error is not None
    assert rooms.join(ROOM, ME, "p2", 1.5) == []  # payload updates meanwhile send nothing
    rooms.went_offline()
    assert rooms.went_online(False, 2.0) == [SendJoin(ROOM, ME, "p2")]
    assert rooms.presence(me(), 2.0) == [Joined(ROOM)]
    assert state.error is None


def test_a_refused_join_after_a_new_session_is_tried_again_too() -> None:
    rooms = joined()
    rooms.went_offline()
    rooms.went_online(False, 1.0)
    assert rooms.presence(error_presence("conflict"), 1.0)[-1] == Refused(ROOM, "conflict", "the nick is taken in the room")
    assert phase(rooms) is Phase.PENDING


# -- self-ping (XEP-0410): a room that vanished without a word ---------------------------------


def test_a_quiet_room_is_self_pinged_once_until_it_answers() -> None:
    rooms = joined()
    assert rooms.due_pings(29.0, idle=30.0) == []  # heard from at t=0
    assert rooms.due_pings(30.0, idle=30.0) == [SendPing(ROOM, ME)]
    assert rooms.due_pings(90.0, idle=30.0) == []  # one out at a time
    assert rooms.ping_answer(ROOM, None, 91.0) == []  # a result: we are in
    assert phase(rooms) is Phase.JOINED
    assert rooms.due_pings(120.0, idle=30.0) == []  # the answer counts as hearing from it
    assert rooms.due_pings(121.0, idle=30.0) == [SendPing(ROOM, ME)]


def test_traffic_from_the_room_makes_a_ping_unneeded() -> None:
    rooms = joined()
    rooms.presence(occupant("other", "o@localhost/x"), 25.0)
    assert rooms.due_pings(50.0, idle=30.0) == []
    rooms.message(groupchat("other", "hi"), 55.0)
    assert rooms.due_pings(80.0, idle=30.0) == []
    assert rooms.due_pings(85.0, idle=30.0) == [SendPing(ROOM, ME)]


def test_a_self_ping_answered_not_joined_rejoins() -> None:
    for condition in ("item-not-found", "not-acceptable"):
        rooms = joined("load 1")
        rooms.due_pings(30.0, idle=30.0)
        actions = rooms.ping_answer(ROOM, condition, 31.0)
        assert isinstance(actions[0], Note) and condition in actions[0].text
        assert actions[1:] == [SendJoin(ROOM, ME, "load 1")]
        assert phase(rooms) is Phase.JOINING


def test_a_self_ping_relayed_to_us_or_unanswered_means_nothing_changed() -> None:
    for condition in ("service-unavailable", "feature-not-implemented", "remote-server-timeout"):
        rooms = joined()
        rooms.due_pings(30.0, idle=30.0)
        assert rooms.ping_answer(ROOM, condition, 31.0) == []
        assert phase(rooms) is Phase.JOINED
    rooms = joined()
    rooms.due_pings(30.0, idle=30.0)
    [note] = rooms.ping_answer(ROOM, None, 40.0, answered=False)
    assert isinstance(note, Note) and phase(rooms) is Phase.JOINED
    assert rooms.due_pings(40.0, idle=30.0) == [SendPing(ROOM, ME)]  # not heard from: ask again


def test_no_self_ping_offline_or_before_joined_and_a_late_answer_is_ignored() -> None:
    rooms = Rooms()
    rooms.went_online(False, 0.0)
    rooms.join(ROOM, ME, None, 0.0)
    assert rooms.due_pings(100.0, idle=30.0) == []  # still joining
    rooms = joined()
    rooms.due_pings(30.0, idle=30.0)
    rooms.went_offline()
    assert rooms.due_pings(60.0, idle=30.0) == []
    assert rooms.ping_answer(ROOM, "item-not-found", 61.0) == []  # about a session that is gone
    assert rooms.ping_answer("other@conference.localhost", "item-not-found", 61.0) == []
