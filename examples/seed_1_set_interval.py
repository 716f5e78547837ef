from libs.startup import startup
startup()
import asyncio
import sys
import threading
import time
from libs.bridge import APISpecs, App as app, MessageSpecs, SetInterval
from libs.bridge import serial_generator
import json

App = app(resource="python", public=True, rest=False)

async def api(specs: APISpecs):
    if specs.cmd == "ping":
        return {"pong": True}

def interval():
    print("hello")
    
SetInterval(interval, 2000).start()

App.xmpp.onapi = api
loop = asyncio.get_event_loop()
loop.run_forever()
