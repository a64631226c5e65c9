"""The simulator's errors.

Tree::

    SimError                 base
     ├── SimSetupError       the simulation cannot start: settings, policy, the state directory
     │    └── EnrollmentRefusedError  the hub refused to enroll a device (unknown or used-up token,
     │                                one that needs approval): no point in going on
     ├── SimAbortedError     the simulation cannot go on (its worker processes died)
     ├── EngineStateError    a simulated engine asked for a transition its app's phase does not allow (a bug)
     └── DeviceOfflineError  a device's offline period began: its connection drops (control flow, not trouble)

A device's trouble with the hub while running stays the agent's own (`agent.errors`): the
device backs off and tries again, as the agent would.
"""

from __future__ import annotations

from edgefleet.errors import EdgefleetError


class SimError(EdgefleetError):
    """Base of the simulator's errors."""


class SimSetupError(SimError):
    """The simulation cannot start; the message says what to change."""


class EnrollmentRefusedError(SimSetupError):
    """The hub refused to enroll a simulated device; the message names the hub's reason."""


class SimAbortedError(SimError):
    """The simulation stopped early: something every device needs is gone."""


class EngineStateError(SimError):
    """A transition of the simulated engine that its app's current phase does not allow."""


class DeviceOfflineError(SimError):
    """A simulated device is in one of its offline periods: no request goes out, a held one is dropped."""
