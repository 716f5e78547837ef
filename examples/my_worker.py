# A QE-style worker, the kind examples/test_my_worker.py tests with qe-worker's pytest fixtures
# (docs/testing.md): App at import, a legacy onapi handler, a Nexus command, a timer, and
# run_forever() at the end. Run it with `python examples/my_worker.py` (QE_* variables set).
from libs.startup import startup
startup()
import asyncio
from libs.bridge import APISpecs, App as app, NexusAPISpecs, SetInterval

App = app(resource="python", public=False)   # answers its own account and QE_ALLOW
beats = 0


def heartbeat():                             # every 60 s, on a timer thread
    global beats
    beats += 1


async def api(specs: APISpecs):
    if specs.cmd == "add":
        return {"sum": specs.body["x"] + specs.body["y"]}
    if specs.cmd == "beats":
        return {"beats": beats}
    return None                              # not ours: {}, and the built-in ping and info answer


@App.nexus.API("greet")
async def greet(specs: NexusAPISpecs):
    App.sendtojid(specs.jid, f"hello, {specs.uid}")   # a chat message back to the caller
    return {"code": 0, "role": specs.role}


App.xmpp.onapi = api
SetInterval(heartbeat, 60_000).start()
asyncio.get_event_loop().run_forever()
