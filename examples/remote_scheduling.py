"""Ask a worker to run its `echo` command every second, print three results, cancel.

    QE_JID=... QE_PASSWORD=... [QE_HOST=... QE_PORT=... QE_TLS=...] \
        python examples/remote_scheduling.py worker@localhost/python

The worker must have a JobScheduler (the default worker, `qe-worker run`, has one) and must
allow our account (its own account, QE_ALLOW, or public).
"""

import asyncio
import json
import sys

from libs.bridge import Client
from libs.scheduling import RemoteWorker


async def main(worker_jid: str) -> None:
    async with Client() as client:
        results: asyncio.Queue = asyncio.Queue()
        client.transport._client.add_event_handler("message", lambda msg: results.put_nowait(msg["body"]))
        worker = RemoteWorker(client, worker_jid)
        job = await worker.every("1s").call("echo", {"hello": "scheduled"}, notify=True)
        print(f"scheduled job {job.id}: {job.trigger}, first run {job.next_run}")
        for _ in range(3):
            note = json.loads(await asyncio.wait_for(results.get(), 10))
            print(f"run for {note['scheduled_for']}: {note.get('result', note.get('error'))}")
        await job.cancel()
        print(f"cancelled {job.id}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/remote_scheduling.py WORKER_FULL_JID")
    asyncio.run(main(sys.argv[1]))
