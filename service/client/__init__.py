"""A typed Python client of the mldm-serving API, blocking (`Client`) and asyncio (`AsyncClient`).

```python
from service.client import Client

with Client("http://localhost:8000", api_key=None) as client:
    result = client.classify(images)                  # uint8 [N, 28, 28] -> digits, probabilities
    codes = client.compress(images)                   # list of bytes
    restored = client.decompress(codes)               # float32 [N, 28, 28]
    energies = client.energy_from_potential(V, include_exact=True).energies
```

It needs only httpx, numpy and orjson (never TensorFlow), errors are `ServiceError`s carrying the
server's message, and big batches travel as `.npy`.
"""

from ._calls import (
    Classification,
    Energies,
    EnergyMode,
    ExactSolution,
    Inference,
    ModelRef,
    ModelStatus,
)
from ._clients import AsyncClient, Client
from .errors import (
    InvalidRequest,
    NotFound,
    ServerError,
    ServiceConnectionError,
    ServiceError,
    ServiceUnavailable,
    Unauthorized,
)

__all__ = [
    "AsyncClient",
    "Classification",
    "Client",
    "Energies",
    "EnergyMode",
    "ExactSolution",
    "Inference",
    "InvalidRequest",
    "ModelRef",
    "ModelStatus",
    "NotFound",
    "ServerError",
    "ServiceConnectionError",
    "ServiceError",
    "ServiceUnavailable",
    "Unauthorized",
]
