"""The hub: edgefleet's control plane (registry, identity, enrollment, operator access, audit)."""
