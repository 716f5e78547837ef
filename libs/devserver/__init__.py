"""Private, throwaway XMPP servers on 127.0.0.1 for demos and integration tests: Prosody
(``DevServer``) and ejabberd, one node or a cluster (``EjabberdCluster``), both behind one
interface (``XmppDevServer``), and the ``qe-worker server`` command.

Why a package: each engine has its own quirks (see the docstrings of ``_prosody`` and
``_ejabberd``), the CLI is a third job; callers import from here only.
"""

from __future__ import annotations

from ._cli import ENGINES, EXIT_NO_PROSODY, EXIT_NOT_INSTALLED, add_arguments, make_server, run_from_args, serve
from ._common import ServerNotInstalled, XmppDevServer
from ._ejabberd import MAX_NODES, EjabberdCluster, EjabberdNotInstalled
from ._prosody import DevServer, ProsodyNotInstalled

__all__ = [
    "ENGINES",
    "EXIT_NO_PROSODY",
    "EXIT_NOT_INSTALLED",
    "MAX_NODES",
    "DevServer",
    "EjabberdCluster",
    "EjabberdNotInstalled",
    "ProsodyNotInstalled",
    "ServerNotInstalled",
    "XmppDevServer",
    "add_arguments",
    "make_server",
    "run_from_args",
    "serve",
]

