"""The hub's HTTP API: FastAPI app factory, dependencies, routes and schemas."""
