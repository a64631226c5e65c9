"""Hub services: the operations behind the API, with authorization and auditing; no HTTP here."""
