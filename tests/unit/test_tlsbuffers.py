"""The TLS read buffer of asyncio's connections is set where asyncio has the setting."""

from __future__ import annotations

import asyncio.sslproto

import pytest

from edgefleet.tlsbuffers import TLS_READ_BUFFER, limit_tls_read_buffers


def test_new_tls_connections_read_through_16_kib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asyncio.sslproto.SSLProtocol, "max_size", 256 * 1024)
    assert limit_tls_read_buffers() is True
    assert asyncio.sslproto.SSLProtocol.max_size == TLS_READ_BUFFER == 16 * 1024


def test_nothing_changes_where_asyncio_has_no_such_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(asyncio.sslproto, "SSLProtocol")
    assert limit_tls_read_buffers() is False
