"""Keys, CSRs, certificates and device tokens: bytes in, objects out or raise; no I/O but key files.

Device keys are ECDSA P-256 or Ed25519, the two types small devices and TPM-less
boards can generate quickly and that JWT (ES256 / EdDSA) can carry. Every parser here
turns foreign exceptions into the errors of `edgefleet.errors`.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import os
import secrets
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import jwt
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgefleet.errors import InvalidCsrError, InvalidDeviceTokenError, InvalidKeyError

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
KeyType = Literal["ecdsa-p256", "ed25519"]

MAX_PEM_BYTES = 16 * 1024
"""No CSR, key or certificate we accept is anywhere near this; larger input is refused unparsed."""

MAX_DEVICE_TOKEN_BYTES = 4096
DEVICE_TOKEN_AUDIENCE = "edgefleet-hub"  # noqa: S105  # a JWT audience, not a secret
KEY_CHANGE_AUDIENCE = "edgefleet-hub/key-change"


def generate_key(key_type: KeyType = "ecdsa-p256") -> PrivateKey:
    """Generate a new private key of an accepted type."""
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: PrivateKey) -> bytes:
    """Serialize a private key as unencrypted PKCS#8 PEM (protected by file mode, not passphrase)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_pem(key: PublicKey) -> str:
    """Serialize a public key as SubjectPublicKeyInfo PEM text."""
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def key_fingerprint(key: PublicKey) -> str:
    """SHA-256 of the DER SubjectPublicKeyInfo, hex: a stable name for a key."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _check_key_type(key: object) -> PublicKey:
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise InvalidKeyError(
        f"unsupported key type {type(key).__name__}"
        + (f" ({key.curve.name})" if isinstance(key, ec.EllipticCurvePublicKey) else "")
        + ": use ECDSA P-256 or Ed25519"
    )


def _pem_bytes(data: str | bytes, what: str, error: type[Exception]) -> bytes:
    raw = data.encode("utf-8", "replace") if isinstance(data, str) else data
    if len(raw) > MAX_PEM_BYTES:
        raise error(f"{what} is larger than {MAX_PEM_BYTES} bytes")
    return raw


def load_public_key(data: str | bytes) -> PublicKey:
    """Parse a PEM public key and check that its type is accepted.

    Raises:
        InvalidKeyError: not a PEM public key, or not ECDSA P-256 / Ed25519.
    """
    raw = _pem_bytes(data, "public key", InvalidKeyError)
    try:
        key = serialization.load_pem_public_key(raw)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InvalidKeyError("not a PEM public key") from exc
    return _check_key_type(key)


def load_private_key(data: bytes) -> PrivateKey:
    """Parse an unencrypted PEM private key of an accepted type.

    Raises:
        InvalidKeyError: not a PEM private key, encrypted, or of another type.
    """
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InvalidKeyError("not an unencrypted PEM private key") from exc
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise InvalidKeyError("unsupported private key type: use ECDSA P-256 or Ed25519")


def _write_atomic(path: Path, data: bytes, *, mode: int, overwrite: bool) -> None:
    """Write via a temp file in the same directory with `mode` set before any byte, fsync, then publish."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if the path exists, unlike os.replace
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def write_private_file(path: Path, data: bytes) -> None:
    """Write secret bytes to a new file with mode 0600, atomically; never overwrite.

    Raises:
        FileExistsError: the path already exists.
    """
    if path.exists():
        raise FileExistsError(str(path))
    _write_atomic(path, data, mode=0o600, overwrite=False)


def write_public_file(path: Path, data: bytes) -> None:
    """Write non-secret bytes (certificates, public keys) atomically with mode 0644."""
    _write_atomic(path, data, mode=0o644, overwrite=True)


# --- CSRs -----------------------------------------------------------------------------


def make_csr(key: PrivateKey, common_name: str = "edgefleet-device") -> str:
    """Create a PEM CSR proving possession of `key`."""
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, algorithm)
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def load_csr(data: str | bytes) -> PublicKey:
    """Parse a PEM CSR, check its self-signature and key type, and return its public key.

    Raises:
        InvalidCsrError: not a PEM CSR, or its signature does not verify.
        InvalidKeyError: the CSR's key is not ECDSA P-256 / Ed25519.
    """
    raw = _pem_bytes(data, "CSR", InvalidCsrError)
    try:
        csr = x509.load_pem_x509_csr(raw)
        key = csr.public_key()
        valid = csr.is_signature_valid
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InvalidCsrError("not a valid PEM certificate signing request") from exc
    if not valid:
        raise InvalidCsrError("CSR signature does not verify: it must be signed by its own key")
    return _check_key_type(key)


# --- certificates ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A certificate as PEM plus the facts the registry keeps about it."""

    pem: str
    serial: int
    not_before: datetime
    not_after: datetime


def _sign_algorithm(key: PrivateKey) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _issued(cert: x509.Certificate) -> IssuedCertificate:
    return IssuedCertificate(
        pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        serial=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


def create_ca(key: PrivateKey, *, name: str, now: datetime, days: int) -> IssuedCertificate:
    """Create a self-signed CA certificate for `key`."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, _sign_algorithm(key))
    )
    return _issued(cert)


def load_certificate(data: str | bytes) -> x509.Certificate:
    """Parse a PEM certificate.

    Raises:
        InvalidKeyError: not a PEM certificate.
    """
    raw = _pem_bytes(data, "certificate", InvalidKeyError)
    try:
        return x509.load_pem_x509_certificate(raw)
    except ValueError as exc:
        raise InvalidKeyError("not a PEM certificate") from exc


def issue_certificate(
    *,
    ca_key: PrivateKey,
    ca_cert_pem: str,
    subject_key: PublicKey,
    common_name: str,
    now: datetime,
    lifetime: timedelta,
    server_names: tuple[str, ...] = (),
) -> IssuedCertificate:
    """Sign a leaf certificate: a device client certificate, or with `server_names` a TLS server one."""
    ca_cert = load_certificate(ca_cert_pem)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(subject_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if server_names:
        alt: list[x509.GeneralName] = []
        for name in server_names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        usage = ExtendedKeyUsageOID.SERVER_AUTH
    else:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH
    builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return _issued(builder.sign(ca_key, _sign_algorithm(ca_key)))


# --- device tokens ---------------------------------------------------------------------


def _jwt_algorithm(key: PrivateKey | PublicKey) -> str:
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "EdDSA"
    return "ES256"


def mint_device_token(
    key: PrivateKey,
    *,
    device_id: str,
    now: datetime,
    lifetime: timedelta,
    audience: str = DEVICE_TOKEN_AUDIENCE,
    extra: dict[str, str] | None = None,
) -> str:
    """Sign a short-lived token that proves the caller holds the device key.

    The default audience makes a bearer token for requests; `KEY_CHANGE_AUDIENCE` with a
    `csr_sha256` claim makes the proof that the current key approves a new one.
    """
    claims: dict[str, Any] = {
        **(extra or {}),
        "sub": device_id,
        "aud": audience,
        "iat": int(now.timestamp()),
        "exp": int((now + lifetime).timestamp()),
        "jti": secrets.token_hex(8),
    }
    return jwt.encode(claims, key, algorithm=_jwt_algorithm(key))


def csr_digest(csr: str) -> str:
    """SHA-256 hex of a CSR's text, as named in a key-change proof."""
    return hashlib.sha256(csr.encode()).hexdigest()


def device_token_subject(token: str) -> str:
    """Read the device id a token claims, before its signature is checked (to find the key).

    Raises:
        InvalidDeviceTokenError: not a JWT, or `sub` is not a UUID.
    """
    if len(token) > MAX_DEVICE_TOKEN_BYTES:
        raise InvalidDeviceTokenError("device token too long")
    # Only the payload is read here, on every device request: `verify_device_token` checks the rest.
    parts = token.split(".")
    try:
        if len(parts) != 3:
            raise ValueError("not three parts")
        payload = parts[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        subject = str(uuid.UUID(str(claims["sub"])))
    except (KeyError, ValueError, TypeError) as exc:  # binascii.Error and JSONDecodeError are ValueErrors
        raise InvalidDeviceTokenError("malformed device token") from exc
    return subject


def verify_device_token(
    token: str,
    key: PublicKey,
    *,
    device_id: str,
    now: datetime,
    max_lifetime: timedelta,
    leeway: timedelta,
    audience: str = DEVICE_TOKEN_AUDIENCE,
) -> dict[str, Any]:
    """Check a device token's signature against the device key and its lifetime against `now`.

    The clock is the caller's, so tests and the hub use one reading per request.

    Raises:
        InvalidDeviceTokenError: bad signature, wrong audience or subject, expired, not yet
            valid, or a lifetime longer than `max_lifetime`.
    """
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[_jwt_algorithm(key)],
            audience=audience,
            options={
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
                "require": ["sub", "aud", "iat", "exp"],
            },
        )
    except (jwt.PyJWTError, InvalidSignature, ValueError, TypeError) as exc:
        raise InvalidDeviceTokenError("device token signature or claims invalid") from exc
    if claims.get("sub") != device_id:
        raise InvalidDeviceTokenError("device token subject mismatch")
    iat, exp = claims.get("iat"), claims.get("exp")
    if not isinstance(iat, int) or not isinstance(exp, int):
        raise InvalidDeviceTokenError("device token iat/exp must be integers")
    stamp = now.timestamp()
    if exp - iat > max_lifetime.total_seconds():
        raise InvalidDeviceTokenError("device token lifetime too long")
    if iat > stamp + leeway.total_seconds():
        raise InvalidDeviceTokenError("device token issued in the future (check the device clock)")
    if exp < stamp - leeway.total_seconds():
        raise InvalidDeviceTokenError("device token expired (check the device clock)")
    return claims
