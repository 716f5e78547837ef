"""qe-worker: XMPP workers compatible with QE's python-worker (``libs.startup``, ``libs.bridge``)."""
