"""Publisher keys: created 0600, listed in keys.json, loadable as signers that verify, never overwritten."""

from __future__ import annotations

import json

import pytest

from edgefleet.cli.main import main
from edgefleet.publisher.errors import KeyStoreError
from edgefleet.publisher.keys import init_keys, load_index, load_signers


@pytest.mark.parametrize("key_type", ["ed25519", "ecdsa"])
def test_keys_are_private_listed_and_sign(tmp_path, key_type):
    keys = tmp_path / "keys"
    roles = init_keys(keys, threshold=2, count=3, key_type=key_type)
    assert keys.stat().st_mode & 0o777 == 0o700
    for role in ("root", "targets"):
        files = sorted((keys / role).glob("*.key"))
        assert len(files) == 3
        assert all(f.stat().st_mode & 0o777 == 0o600 for f in files)
        assert roles[role].threshold == 2
    index = load_index(keys)
    assert {k.keyid for k in index["root"].keys} == {f.stem for f in (keys / "root").glob("*.key")}
    assert not {k.keyid for k in index["root"].keys} & {k.keyid for k in index["targets"].keys}
    for signer in load_signers(keys, "targets"):
        signature = signer.sign(b"payload")
        signer.public_key.verify_signature(signature, b"payload")
    assert "PRIVATE" not in (keys / "keys.json").read_text()


def test_existing_directory_is_never_overwritten(tmp_path):
    keys = tmp_path / "keys"
    init_keys(keys)
    before = sorted(p.name for p in keys.rglob("*"))
    with pytest.raises(KeyStoreError, match="refusing to overwrite"):
        init_keys(keys)
    assert sorted(p.name for p in keys.rglob("*")) == before


@pytest.mark.parametrize(("threshold", "count"), [(0, 1), (3, 2), (1, 17)])
def test_bad_thresholds_are_refused(tmp_path, threshold, count):
    with pytest.raises(KeyStoreError):
        init_keys(tmp_path / "keys", threshold=threshold, count=count)
    assert not (tmp_path / "keys").exists()


def test_loose_key_files_and_strangers_are_refused(tmp_path):
    keys = tmp_path / "keys"
    init_keys(keys)
    key_file = next((keys / "root").glob("*.key"))
    key_file.chmod(0o644)
    with pytest.raises(KeyStoreError, match="0600"):
        load_signers(keys, "root")
    key_file.chmod(0o600)
    stranger = keys / "root" / ("f" * 64 + ".key")
    stranger.write_bytes(key_file.read_bytes())
    stranger.chmod(0o600)
    with pytest.raises(KeyStoreError, match="not listed"):
        load_signers(keys, "root")
    (keys / "keys.json").write_text("{")
    with pytest.raises(KeyStoreError, match="malformed"):
        load_index(keys)


def test_cli_keys_init(tmp_path, capsys):
    assert main(["keys", "init", "--dir", str(tmp_path / "k"), "--threshold", "1", "--keys", "2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert len(summary["root"]["keyids"]) == 2
    assert main(["keys", "init", "--dir", str(tmp_path / "k")]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert main(["keys", "init", "--dir", str(tmp_path / "j"), "--type", "rsa"]) == 2
