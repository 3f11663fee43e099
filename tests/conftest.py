"""Session-wide test defaults.

gRPC is off in tests unless a test turns it on (`MLDM_GRPC_PORT`): with its default port, every
app a test starts would bind 8081, and with SO_REUSEPORT two test runs on one machine would
silently share it. Servers started as subprocesses inherit this too.
"""

from __future__ import annotations

import os

os.environ.setdefault("MLDM_GRPC_PORT", "0")
