"""The `edgefleet` command line: one module per command group, all thin over services or the API."""
