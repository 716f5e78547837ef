# A worker written the way QE's docs write Nexus scripts: no startup(), no resource=,
# decorators, top-level `await`. Run it with `qe-worker run examples/qe_nexus_worker.py`
# (plain `python` refuses top-level await); QE_APP names its service, RESOURCE its resource.
import asyncio
import os

from libs.bridge import NexusAPISpecs, App as AppClass, NexusMessageSpecs

App = AppClass(public=True, rest=False)

App.subscribe("mychannel")


@App.nexus.Channel("mychannel")
async def on_channel(specs: NexusMessageSpecs):
    print(f"channel {specs.channel} from {specs.fromjid}: {specs.body}", flush=True)


@App.nexus.Direct()
async def on_direct(specs: NexusMessageSpecs):
    print(f"direct from {specs.fromjid}: {specs.body}", flush=True)
    App.sendtojid(specs.fromjid, {"echo": specs.body})


@App.nexus.API("samplecmd")
async def samplecmd(specs: NexusAPISpecs):
    print(f"ran {specs.body.get('x')}", flush=True)
    if specs.body.get("hold"):
        await asyncio.sleep(specs.body["hold"])
    return {"code": 0, "myval": specs.body.get("x"), "role": specs.role, "by": App.jid}


@App.nexus.API("nohandler")
async def nohandler(specs: NexusAPISpecs):
    return {"code": -1000, "msg": "no api handler"}


service = os.environ.get("QE_APP", "emyapp")
found = App.find(app=service)  # synchronous, at module level, as in QE's docs
print("found", found, flush=True)
res = await App.api(app=service, cmd="ping", body={})  # top-level await, as in QE's docs
print("api", res, flush=True)

loop = asyncio.get_event_loop()
loop.run_forever()
