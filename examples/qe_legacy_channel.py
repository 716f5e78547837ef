# A legacy-style QE worker (startup(), App.xmpp.onapi/msgreceiver) that talks on a channel.
from libs.startup import startup

startup()

import asyncio

from libs.bridge import APISpecs, App as app, MessageSpecs

App = app(resource="legacy", public=False)


async def api(specs: APISpecs):
    if specs.cmd == "say":
        App.sendtochannel("news", specs.body)
        return {"code": 0}
    return None  # QE: a falsy answer is {}


async def receiver(specs: MessageSpecs):
    print(f"got {specs.channel} {specs.fromjid} {specs.body}", flush=True)


App.xmpp.onapi = api
App.xmpp.msgreceiver = receiver
App.subscribe("news")

asyncio.get_event_loop().run_forever()
