"""Was a message stored while we were offline, or only held back for a moment?

Why this is not "has a ``<delay/>``" (XEP-0203): a worker drops stored messages (offline
storage, room history) as old news, as QE does. But a server also stamps the messages it
sends again when a XEP-0198 session is resumed: the ones that were in flight when the link
broke. Those were sent to this very session a moment ago; dropping them lost every chat and
channel message of a network blip. Measured on the servers we test (2026-12-04):

* Prosody 0.12 stamps its resent copies ``from`` our own bare JID; its offline storage stamps
  ``from`` the server's domain;
* ejabberd 23.01 stamps them ``from`` the domain with the text ``Resent`` (its offline storage:
  ``Offline Storage``); a session resumed on another node of a cluster is resent the same way;
* room history is stamped ``from`` the room.

Either mark says "resent", whatever the clocks say. Otherwise, for servers we have not
measured, the stamp decides: stored means stamped before the current session began (XEP-0082
stamps may have whole seconds only, hence the session's start rounded down). That rule alone
would do for both servers above; the marks keep resent messages live when the server's clock
is behind ours.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from datetime import datetime
from typing import Final

from ..access import bare_jid

__all__ = ["stored"]

_DELAY_TAG: Final = "{urn:xmpp:delay}delay"
_RESENT: Final = "Resent"  # ejabberd's text on what it sends again on resumption


def stored(xml: ET.Element, own_jid: str = "", session_since: float | None = None) -> bool:
    """Whether the message ``xml`` was stored while we were offline (not live news).

    ``own_jid`` is our JID (full or bare); ``session_since`` the wall-clock time
    (``time.time()``) at which the current session began (a resumption continues it), None
    before the first."""
    delay = xml.find(_DELAY_TAG)
    if delay is None:
        return False
    origin = delay.get("from") or ""
    if (own_jid and bare_jid(origin) == bare_jid(own_jid)) or (delay.text or "").strip() == _RESENT:
        return False
    if session_since is None:
        return True
    try:
        stamp = datetime.fromisoformat(delay.get("stamp") or "").timestamp()
    except ValueError:
        return True
    return stamp < math.floor(session_since)
