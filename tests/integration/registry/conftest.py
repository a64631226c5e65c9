"""A real OCI registry per test session (Debian's docker-registry, distribution 2.8), and helpers that push images.

`registry` serves plain HTTP on 127.0.0.1 with anonymous push and pull. `token_registry`
serves the same storage read-only behind token authentication: its 401 names a token
server (a small HTTP server here) that hands anonymous pull tokens, signed with a key the
registry trusts, the way Docker Hub's auth.docker.io does.

Images are pushed through the distribution API (blob uploads, manifest PUTs) so each
test builds exactly the manifest graph it needs. Each test uses repositories of its own.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import secrets
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import jwt
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edgefleet.publisher.registry import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST

REGISTRY_BIN = Path("/usr/bin/docker-registry")
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
IN_TOTO = "application/vnd.in-toto+json"
TOKEN_SERVICE = "edgefleet-test-registry"
TOKEN_ISSUER = "edgefleet-test-token-issuer"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer(files: dict[str, bytes]) -> tuple[bytes, str]:
    """A gzipped tar layer holding `files`, and its diff ID (digest of the uncompressed tar)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), 0o644
            archive.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue(), mtime=0), sha256(raw.getvalue())


@dataclass
class Registry:
    """A running registry: where it listens, its storage directory, and push helpers."""

    host: str
    storage: Path
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def repo(self, name: str) -> str:
        """A repository name of its own for one test (the session's registry is shared)."""
        return f"{name}-{secrets.token_hex(4)}"

    def push_blob(self, repo: str, data: bytes, media_type: str) -> dict[str, Any]:
        start = self.http.post(f"{self.url}/v2/{repo}/blobs/uploads/")
        assert start.status_code == 202, start.text
        location = httpx.URL(self.url).join(start.headers["Location"]).copy_add_param("digest", sha256(data))
        done = self.http.put(location, content=data)
        assert done.status_code == 201, done.text
        return {"mediaType": media_type, "digest": sha256(data), "size": len(data)}

    def push_manifest(self, repo: str, reference: str, body: bytes, media_type: str) -> dict[str, Any]:
        response = self.http.put(
            f"{self.url}/v2/{repo}/manifests/{reference}", content=body, headers={"Content-Type": media_type}
        )
        assert response.status_code == 201, response.text
        assert response.headers["Docker-Content-Digest"] == sha256(body)
        return {"mediaType": media_type, "digest": sha256(body), "size": len(body)}

    def push_image(
        self, repo: str, *, arch: str, tag: str | None = None, docker: bool = False, os: str = "linux"
    ) -> tuple[dict[str, Any], bytes]:
        """One single-platform image (OCI, or Docker schema 2 with `docker`): its manifest descriptor and bytes."""
        data, diff_id = layer({"etc/edgefleet-test": f"{repo} {arch} {secrets.token_hex(8)}\n".encode()})
        layer_descriptor = self.push_blob(repo, data, DOCKER_LAYER if docker else OCI_LAYER)
        config = json.dumps(
            {
                "architecture": arch,
                "os": os,
                "config": {"Cmd": ["/bin/true"]},
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            }
        ).encode()
        config_descriptor = self.push_blob(repo, config, DOCKER_CONFIG if docker else OCI_CONFIG)
        media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
        body = json.dumps(
            {"schemaVersion": 2, "mediaType": media_type, "config": config_descriptor, "layers": [layer_descriptor]},
            indent=3,
        ).encode()
        return self.push_manifest(repo, tag or sha256(body), body, media_type), body

    def push_attestation(self, repo: str, subject: dict[str, Any]) -> dict[str, Any]:
        """A buildx-style attestation manifest (in-toto layer) for `subject`, as an index entry."""
        statement = json.dumps({"_type": "https://in-toto.io/Statement/v0.1", "subject": [subject]}).encode()
        layer_descriptor = self.push_blob(repo, statement, IN_TOTO)
        config_descriptor = self.push_blob(repo, b"{}", OCI_CONFIG)
        body = json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_descriptor, "layers": [layer_descriptor]}
        ).encode()
        descriptor = self.push_manifest(repo, sha256(body), body, OCI_MANIFEST)
        return {
            **descriptor,
            "platform": {"architecture": "unknown", "os": "unknown"},
            "annotations": {
                "vnd.docker.reference.digest": subject["digest"],
                "vnd.docker.reference.type": "attestation-manifest",
            },
        }

    def push_index(
        self, repo: str, tag: str, archs: tuple[str, ...], *, attestation: bool = True, docker: bool = False
    ) -> tuple[dict[str, Any], bytes]:
        """A multi-architecture image: an index of one image per arch, plus an attestation entry."""
        entries = []
        for arch in archs:
            descriptor, _ = self.push_image(repo, arch=arch, docker=docker)
            entries.append({**descriptor, "platform": {"architecture": arch, "os": "linux"}})
        if attestation:
            entries.append(self.push_attestation(repo, entries[0]))
        media_type = DOCKER_LIST if docker else OCI_INDEX
        body = json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": entries}).encode()
        return self.push_manifest(repo, tag, body, media_type), body

    def blob_file(self, digest: str) -> Path:
        """Where the registry keeps a blob's bytes (distribution's filesystem driver layout)."""
        hexdigest = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"


def _write_config(root: Path, port: int, storage: Path, extra: dict[str, Any], *, readonly: bool) -> Path:
    # No blob descriptor cache: what tests change in the storage directory is what the registry serves.
    storage_config: dict[str, Any] = {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}}
    if readonly:
        storage_config["maintenance"] = {"readonly": {"enabled": True}}
    config = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": storage_config,
        "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
        **extra,
    }
    path = root / f"config-{port}.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextmanager
def run_registry(
    root: Path, storage: Path, extra: dict[str, Any] | None = None, *, readonly: bool = False, port: int | None = None
) -> Iterator[str]:
    """Run `docker-registry serve` on 127.0.0.1 (`port`, or a free one) until `/v2/` answers; stop it afterwards."""
    if not REGISTRY_BIN.exists():
        pytest.fail(f"{REGISTRY_BIN} is missing: scripts/setup installs Debian's docker-registry package")
    port = port or free_port()
    config = _write_config(root, port, storage, extra or {}, readonly=readonly)
    log_path = root / f"registry-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"docker-registry exited with {process.returncode}: {log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=2).status_code in (200, 401):
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"docker-registry did not answer on 127.0.0.1:{port}: {log_path.read_text()[-2000:]}")
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp("registry")
    storage = root / "storage"
    with run_registry(root, storage) as host:
        instance = Registry(host=host, storage=storage)
        yield instance
        instance.http.close()


@dataclass
class TokenServer:
    """Hands out anonymous pull tokens the way Docker Hub's auth.docker.io does; records what it was asked."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    requests: list[dict[str, list[str]]] = field(default_factory=list)

    def token(self, query: dict[str, list[str]]) -> str:
        self.requests.append(query)
        access = []
        for scope in query.get("scope", []):
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": [a for a in actions.split(",") if a == "pull"]})
        now = int(time.time())
        claims = {
            "iss": TOKEN_ISSUER,
            "sub": "",
            "aud": query.get("service", [""])[0],
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        x5c = base64.b64encode(self.certificate.public_bytes(serialization.Encoding.DER)).decode()
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"x5c": [x5c]})


def _token_certificate() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgefleet test token signer")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, certificate


@contextmanager
def run_token_server(server: TokenServer) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlparse(self.path)
            if url.path != "/token":
                self.send_error(404)
                return
            body = json.dumps({"token": server.token(parse_qs(url.query)), "expires_in": 300}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@dataclass
class TokenRegistry:
    """A registry that wants bearer tokens, serving `registry`'s storage read-only, and its token server."""

    host: str
    token_host: str
    tokens: TokenServer


@pytest.fixture(scope="session")
def token_registry(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenRegistry]:
    root = tmp_path_factory.mktemp("token-registry")
    key, certificate = _token_certificate()
    bundle = root / "token-signer.pem"
    bundle.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    tokens = TokenServer(key=key, certificate=certificate)
    with run_token_server(tokens) as token_host:
        extra = {
            "auth": {
                "token": {
                    "realm": f"http://{token_host}/token",
                    "service": TOKEN_SERVICE,
                    "issuer": TOKEN_ISSUER,
                    "rootcertbundle": str(bundle),
                }
            },
        }
        with run_registry(root, registry.storage, extra, readonly=True) as host:
            yield TokenRegistry(host=host, token_host=token_host, tokens=tokens)
