"""`edgefleet demo`: a hub, a registry, three real agents on Podman and two releases, on this machine, end to end."""
