"""Sends messages with the official Segment and RudderStack Python SDKs, configured only with a host and a write
key. Env: KIZUNA_BASE, KIZUNA_WRITE_KEY."""
import os
import sys

import segment.analytics as segment
import rudderstack.analytics as rudder

base = os.environ["KIZUNA_BASE"]
write_key = os.environ["KIZUNA_WRITE_KEY"]
failures = []

segment.write_key = write_key
segment.host = base
segment.on_error = lambda error, items: failures.append(("segment", str(error)))
segment.identify("segment-py-user", {"email": "segment.py@example.com", "city": "Osaka"})
segment.track("segment-py-user", "Order Completed", {"order_id": "sp-1", "total": 19.0})
segment.flush()

rudder.write_key = write_key
rudder.dataPlaneUrl = base
rudder.on_error = lambda error, items: failures.append(("rudder", str(error)))
rudder.identify("rudder-py-user", {"email": "rudder.py@example.com"})
rudder.track("rudder-py-user", "Product Added", {"product_id": "p-9"})
rudder.flush()

if failures:
    print(failures, file=sys.stderr)
    sys.exit(1)
print("sdk messages sent")
