"""Publisher tools: keys, release build, scan and signing, on the release engineer's machine."""
