"""Test-only agent: `edgefleet agent run --once` that dies by SIGKILL at a named update phase.

Usage: python -m tests.integration.agent.faulty_agent CONFIG PHASE [--power-loss | --containers-only]

With --power-loss, every container of the device is killed at the same instant too (the
whole device losing power); with --containers-only, only the containers are killed and the
agent carries on. The fault hook is a parameter of `serve`, which no command-line
flag or setting reaches: only code like this, which lives under tests/, can set it.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import docker

from edgefleet.agent.config import load_settings
from edgefleet.agent.identity import saved_device_id
from edgefleet.cli.agentd import serve


def main(config: str, phase: str, *, power_loss: bool, containers_only: bool) -> None:
    settings = load_settings(Path(config), {})
    owner = saved_device_id(settings.data_dir)

    def die_at(reached: str) -> None:
        if reached != phase:
            return
        if power_loss or containers_only:
            client = docker.DockerClient(base_url=settings.engine, version="1.41", timeout=30)
            for container in client.containers.list(filters={"label": f"io.edgefleet.owner={owner}"}):
                container.kill()
        if not containers_only:
            os.kill(os.getpid(), signal.SIGKILL)

    serve(settings, once=True, fault=die_at)


if __name__ == "__main__":
    flags = sys.argv[3:]
    main(sys.argv[1], sys.argv[2], power_loss="--power-loss" in flags, containers_only="--containers-only" in flags)
