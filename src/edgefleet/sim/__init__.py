"""The fleet simulator (`edgefleet sim`): many real enrolled devices in one process, on a simulated engine."""
