"""The releases' images on one engine, by the references releases give them: found, fetched, named, removed.

An image is pulled by its digest (``name@sha256:...``), or loaded from a release's verified
bundle: `agent.engine.bundled` checks that the archive holds the image the release names
and streams the engine that one image for its platform. Where the engine resolves the
digest reference (Podman always, Docker Engine for what it pulled) the image is known by
it. Docker Engine keeps no digest reference for what it loads, so there the image is known
by its ID: the digest of the config the bundle's manifest names. An image with that ID is
that image, however it came to the engine (the ID is the hash of the config, and the config
names the digest of every layer's content); a tag is never looked at.

Used by `agent.engine.docker.DockerEngine`, which owns the API connection and the bundles.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from edgefleet.agent.engine.api import EngineApi, segment
from edgefleet.agent.engine.bundled import BundledImage, find_image, load_stream
from edgefleet.agent.errors import EngineError
from edgefleet.bundles import loaded_tag
from edgefleet.errors import BundleError

log = logging.getLogger(__name__)
ARM_VARIANTS = {"armv5tel": "v5", "armv6l": "v6", "armv7l": "v7", "aarch64": "v8"}
"""The platform variant of an index entry for the machine names engines report (``Architecture``)."""


def _image_id(api: EngineApi, reference: str) -> str | None:
    """The ID of the image `reference` names on the engine, or None when it names none."""
    try:
        found = api.call(f"inspect {reference}", "GET", f"/images/{segment(reference)}/json")
    except EngineError:
        return None
    return str(found.get("Id")) if isinstance(found, dict) and found.get("Id") else None


def _untagged(name: str) -> str:
    """``registry:5000/repo:tag`` -> ``registry:5000/repo``: a pull by digest names the repository alone."""
    repository, colon, tag = name.rpartition(":")
    return repository if colon and "/" not in tag else name


@dataclass
class EngineImages:
    """What the agent knows of one engine's images beyond what the engine says: bundles read, loads made."""

    _platform: tuple[str, str | None] | None = None
    _bundled: dict[tuple[str, Path], BundledImage] = field(default_factory=dict)
    _loaded_as: dict[str, str] = field(default_factory=dict)
    """Image ID -> the image (name@sha256:...) a bundle of it was found for, where the engine knows it by ID."""

    def local(self, api: EngineApi, bundles: Mapping[str, Path], image: str) -> str | None:
        """How the engine names `image`: that reference, the ID of a bundle's image, or None (absent)."""
        if _image_id(api, image) is not None:
            return image
        archive = bundles.get(image)
        if archive is None:
            return None
        try:
            config = self._bundled_image(api, image, archive).config
        except EngineError:
            return None
        if _image_id(api, config) != config:
            return None
        self._loaded_as[config] = image
        return config

    def reported(self, image: str | None) -> str | None:
        """The image a container runs, as the release names it where the engine names it by a bundle's ID."""
        return self._loaded_as.get(image, image) if image else image

    def fetch(self, api: EngineApi, bundles: Mapping[str, Path], image: str) -> None:
        """Load `image` from its verified bundle, or pull it by digest; it must then be on the engine.

        A bundle that does not hold the image is refused (not retryable, nothing is loaded or
        pulled). A bundle the engine fails to load gives way to a pull by digest from the
        image's registry; when that fails too, the error names both.

        Raises:
            EngineError: as above, or the pull failed, or the image is not there afterwards.
        """
        archive = bundles.get(image)
        failed: EngineError | None = None
        if archive is not None:
            bundled = self._bundled_image(api, image, archive)
            try:
                self._load(api, bundled)
                return
            except EngineError as exc:
                log.warning("%s: the engine did not load bundle %s (%s); pulling it", image, archive.name, exc.message)
                failed = exc
        name, _, digest = image.partition("@")
        try:
            api.progress(f"pull {image}", "/images/create", params={"fromImage": _untagged(name), "tag": digest})
        except EngineError as exc:
            if failed is None:
                raise
            raise EngineError(f"{failed.message}; pulling it instead failed too: {exc.message}") from exc
        if self.local(api, bundles, image) is None:
            raise EngineError(f"{image} is not present by its digest after fetching it", retryable=False)

    def remove(self, api: EngineApi, bundles: Mapping[str, Path], image: str) -> bool:
        """Remove an image the agent fetched; False when the engine keeps it (in use, named by others, or gone).

        The agent's references to it go: the digest reference, and the tag its bundle's load gave
        it (`edgefleet.bundles.loaded_tag`). The engine deletes the image with its last reference.
        """
        name, _, digest = image.partition("@")
        references = [ref for ref in (image, loaded_tag(name, digest)) if _image_id(api, ref) is not None]
        if not references:
            return False
        for reference in references:
            try:
                api.send(f"remove image {reference}", "DELETE", f"/images/{segment(reference)}")
            except EngineError as exc:
                log.info("image %s kept: %s", image, exc.message)
                return False
        return self.local(api, bundles, image) is None

    def _platform_of(self, api: EngineApi) -> tuple[str, str | None]:
        """The engine's architecture (OCI name) and, where its machine name tells it, variant (asked once)."""
        if self._platform is None:
            arch = str((api.call("engine version", "GET", "/version") or {}).get("Arch") or "")
            machine = str((api.call("engine info", "GET", "/info") or {}).get("Architecture") or "")
            self._platform = (arch, ARM_VARIANTS.get(machine))
        return self._platform

    def _bundled_image(self, api: EngineApi, image: str, archive: Path) -> BundledImage:
        """What the bundle `archive` holds of `image` for this engine (read once per archive).

        Raises:
            EngineError: not retryable: the archive does not hold the image for this engine, or is unusable.
        """
        key = (image, archive)
        if key not in self._bundled:
            arch, variant = self._platform_of(api)
            try:
                self._bundled[key] = find_image(archive, image, arch=arch, variant=variant)
            except BundleError as exc:
                raise EngineError(f"{image}: refused {exc}", retryable=False) from exc
        return self._bundled[key]

    def _load(self, api: EngineApi, bundled: BundledImage) -> None:
        """Stream the engine the bundle's image; it must then hold an image whose ID is the config's digest."""
        what = f"load {bundled.image} from {bundled.archive.name}"
        try:
            api.progress(what, "/images/load", content=load_stream(bundled))
        except BundleError as exc:
            raise EngineError(f"{what}: {exc}") from exc
        if _image_id(api, bundled.config) != bundled.config:
            raise EngineError(f"{what}: the engine holds no image {bundled.config} afterwards")
        self._loaded_as[bundled.config] = bundled.image
