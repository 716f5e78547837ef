"""Seed 001's usage example ("Building a Repeating Task Runner in Python"), as written.

    python examples/repeating_task_runner.py

It takes 3 seconds and prints "Hello, World!" 2 times: reset() at 0.5 s postpones the first
run to 1.5 s, the second comes at 2.5 s, stop() at 3 s. No server and no event loop needed:
the task runs on a timer thread. The class is libs.timers' (also in libs.bridge).
"""

import time

from libs.timers import RepeatingTaskRunner

# Create the runner
runner = RepeatingTaskRunner(
    interval=1.0,
    task=lambda: print("Hello, World!"),
)

# Start the runner
runner.start()

# Wait for 0.5 seconds
time.sleep(0.5)

# Reset the runner to postpone the current execution
runner.reset()

# Keep running for 2.5 seconds
time.sleep(2.5)

# Stop the runner
runner.stop()
