"""The device agent: identity and enrollment now; following the hub and running releases later."""
