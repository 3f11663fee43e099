"""HTTP layer: routers per protocol, dependencies, body parsing and error handlers."""
