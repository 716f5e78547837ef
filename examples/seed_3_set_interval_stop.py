from libs.startup import startup
startup()
import asyncio
import sys
import threading
import time
from libs.bridge import APISpecs, App as app, MessageSpecs, SetInterval, SetTimeout
from libs.bridge import serial_generator
import json

App = app(resource="python", public=True, rest=False)

async def api(specs: APISpecs):
    if specs.cmd == "ping":
        return {"pong": True}

counter = 0
def interval():
    global counter
    counter += 1
    print("hello")
    if counter >= 5:
        print("interval cleared.")
        c.stop()
    
c = SetInterval(interval, 1000)
c.start()

App.xmpp.onapi = api
loop = asyncio.get_event_loop()
loop.run_forever()
