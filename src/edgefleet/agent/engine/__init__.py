"""Container engines the agent drives; the only package that imports the Docker SDK (docker-py)."""
