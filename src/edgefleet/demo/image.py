"""The demo's sample image: this machine's static busybox as a one-layer OCI image, pushed to a local registry.

Nothing is downloaded: the layer is built here from `/bin/busybox` (Debian's busybox-static,
which scripts/setup installs) and pushed through the registry's distribution API.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import httpx

from edgefleet.demo.errors import DemoError

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "echo", "mkdir", "httpd", "sleep", "cat", "test", "true")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def busybox_layer(
    busybox: Path = BUSYBOX, *, applets: Iterable[str] = APPLETS, files: Mapping[str, bytes] | None = None
) -> tuple[bytes, str]:
    """A gzipped layer with /bin/busybox, its `applets` and `files`, and its diff ID (digest of the plain tar)."""
    if not busybox.is_file():
        raise DemoError(f"{busybox} is missing: scripts/setup installs Debian's busybox-static")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        directory = tarfile.TarInfo("bin")
        directory.type, directory.mode = tarfile.DIRTYPE, 0o755
        archive.addfile(directory)
        data = busybox.read_bytes()
        binary = tarfile.TarInfo("bin/busybox")
        binary.size, binary.mode = len(data), 0o755
        archive.addfile(binary, io.BytesIO(data))
        for applet in applets:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            archive.addfile(link)
        for name, content in (files or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue(), mtime=0), _digest(raw.getvalue())


def push_sample_image(registry: str, repo: str = "edgefleet-demo/busybox") -> str:
    """Push the sample image to the plain-HTTP registry at `registry` (HOST:PORT); returns it pinned by digest."""
    layer, diff_id = busybox_layer()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    ).encode()
    url = f"http://{registry}/v2/{repo}"
    try:
        with httpx.Client(timeout=30) as http:
            descriptors = [
                _push_blob(http, url, blob, kind) for blob, kind in ((config, OCI_CONFIG), (layer, OCI_LAYER))
            ]
            manifest = json.dumps(
                {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": descriptors[0], "layers": [descriptors[1]]}
            ).encode()
            put = http.put(f"{url}/manifests/demo", content=manifest, headers={"Content-Type": OCI_MANIFEST})
            if put.status_code != 201:
                raise DemoError(f"the registry refused the sample image's manifest ({put.status_code})")
    except httpx.HTTPError as exc:
        raise DemoError(f"pushing the sample image to {registry}: {exc}") from exc
    return f"{registry}/{repo}@{_digest(manifest)}"


def _push_blob(http: httpx.Client, url: str, blob: bytes, media_type: str) -> dict[str, object]:
    start = http.post(f"{url}/blobs/uploads/")
    if start.status_code != 202:
        raise DemoError(f"the registry refused an upload ({start.status_code})")
    location = httpx.URL(url).join(start.headers["Location"]).copy_add_param("digest", _digest(blob))
    done = http.put(location, content=blob, headers={"Content-Type": "application/octet-stream"})
    if done.status_code != 201:
        raise DemoError(f"the registry refused a blob ({done.status_code})")
    return {"mediaType": media_type, "digest": _digest(blob), "size": len(blob)}
