"""The default worker (resource ``python``): ``ping``, ``info``, ``echo``.

``ping`` and ``info`` are built into every ``App``; this worker adds ``echo`` and is what
``qe-worker run`` and ``qe-worker demo`` start. It is also the smallest example of a worker
written in the new style (``App.command``) rather than QE's single ``onapi``.
"""

from __future__ import annotations

from typing import Any

from libs.bridge import APISpecs, App

__all__ = ["build"]


def build(*, resource: str = "python", public: bool = False, **app_kwargs: Any) -> App:
    """Create the default worker (not started until its loop runs)."""
    app = App(resource=resource, public=public, **app_kwargs)

    @app.command("echo")
    async def echo(specs: APISpecs) -> dict[str, Any]:
        """Return the body as sent: the simplest end-to-end check of a caller's encoding."""
        return dict(specs.body)

    return app
