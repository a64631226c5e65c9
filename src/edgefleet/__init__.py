"""edgefleet: deploy and update containerized applications on fleets of edge devices."""

__version__ = "0.1.0"
