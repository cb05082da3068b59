"""TLS for a listener (wss://, RawSocket over TLS): certificate files read and checked at config time.

A listener's factory is wrapped in Twisted's TLSMemoryBIOFactory, which is what `SSL4ServerEndpoint`
does, so TLS goes over any Twisted server endpoint. Files that are missing, unreadable, not PEM, or a
key that does not match its certificate stop the config check with the key path.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from realms.schema import ConfigError, known_keys, mapping, str_value

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


@dataclass
class TlsConfig:
    certificate: str  # PEM: the server's certificate, then any intermediates
    key: str  # PEM: its private key
    ca_certificates: list[str] = field(default_factory=list)  # given: clients must present a certificate they sign
    ciphers: str | None = None  # an OpenSSL cipher string; None: Twisted's secure default
    key_password_file: str | None = None  # a file holding the password of an encrypted key
    options: Any = field(default=None, repr=False, compare=False)  # the CertificateOptions built from these
    live: Any = field(default=None, repr=False, compare=False)  # a listening port's ReloadableCredentials


def _read(path: str, where: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(1024 * 1024)
    except OSError as e:
        raise ConfigError(where, f"cannot read {path}: {e.strerror}") from None


def _certificates(path: str, where: str) -> list:
    from cryptography import x509

    blocks = _PEM_CERT.findall(_read(path, where))
    if not blocks:
        raise ConfigError(where, f"{path} holds no PEM certificate")
    try:
        return [x509.load_pem_x509_certificate(b) for b in blocks]
    except ValueError:
        raise ConfigError(where, f"{path}: a certificate in it does not parse") from None


# what `tls:` takes (and the config schema)
TLS_KEYS = ("certificate", "key", "ca_certificates", "ciphers", "key_password_file")


def parse(raw: Any, path: str) -> TlsConfig:
    """Validate a listener's `tls:` mapping; the files are read and checked here (ConfigError names the key)."""
    d = mapping(raw, path)
    known_keys(d, path, TLS_KEYS)
    for k in ("certificate", "key"):
        if k not in d:
            raise ConfigError(f"{path}.{k}", "is required (a PEM file path)")
    cas = d.get("ca_certificates", [])
    if isinstance(cas, str):
        cas = [cas]
    if not isinstance(cas, list) or any(type(x) is not str or not x for x in cas):
        raise ConfigError(f"{path}.ca_certificates", f"must be a PEM file path or a list of them, got {cas!r}")
    password_file = d.get("key_password_file")
    if password_file is not None and (type(password_file) is not str or not password_file):
        raise ConfigError(f"{path}.key_password_file", f"must be a file path, got {password_file!r}")
    tls = TlsConfig(certificate=str_value(d, "certificate", path, ""), key=str_value(d, "key", path, ""),
                    ca_certificates=list(cas), ciphers=d.get("ciphers"), key_password_file=password_file)
    if tls.ciphers is not None and (type(tls.ciphers) is not str or not tls.ciphers):
        raise ConfigError(f"{path}.ciphers", f"must be an OpenSSL cipher string, got {tls.ciphers!r}")
    tls.options = server_options(tls, path)  # everything loads, the key matches, the ciphers exist
    return tls


def server_options(tls: TlsConfig, path: str = "tls") -> Any:
    """Twisted CertificateOptions for a TlsConfig: TLS 1.2 at least; client certificates required
    (and verified against `ca_certificates`) only when those are given."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from OpenSSL import SSL, crypto
    from twisted.internet.ssl import AcceptableCiphers, CertificateOptions, TLSVersion

    chain = _certificates(tls.certificate, f"{path}.certificate")
    key = _private_key(tls, path, load_pem_private_key)
    cas = [crypto.X509.from_cryptography(c)  # OpenSSL's certificate store takes only its own type
           for i, f in enumerate(tls.ca_certificates) for c in _certificates(f, f"{path}.ca_certificates[{i}]")]
    kw: dict = {}
    if tls.ciphers is not None:
        kw["acceptableCiphers"] = AcceptableCiphers.fromOpenSSLCipherString(tls.ciphers)
    try:
        options = CertificateOptions(privateKey=key, certificate=chain[0], extraCertChain=chain[1:],
                                     verify=bool(cas), caCerts=cas or None, requireCertificate=bool(cas),
                                     raiseMinimumTo=TLSVersion.TLSv1_2, **kw)
    except ValueError:  # Twisted: "Supplied IAcceptableCiphers yielded no usable ciphers"
        raise ConfigError(f"{path}.ciphers", f"no TLS 1.2 cipher this OpenSSL knows matches {tls.ciphers!r}") from None
    try:
        options.getContext()  # loads the pair into an OpenSSL context: a key that does not match fails here
    except SSL.Error as e:
        raise ConfigError(f"{path}.key", f"{tls.key} does not match {tls.certificate} ({_first(e)})") from None
    return options


def _private_key(tls: TlsConfig, path: str, load: Any) -> Any:
    """The key, decrypted with the password file's first line if one is given; each failure says which."""
    pem = _read(tls.key, f"{path}.key")  # a missing file is said as such
    password = None
    if tls.key_password_file is not None:
        lines = _read(tls.key_password_file, f"{path}.key_password_file").splitlines()
        password = lines[0] if lines else b""
    encrypted = b"ENCRYPTED" in pem[:200]
    try:
        return load(pem, password=password)
    except TypeError:  # encrypted without a password, or a password for a key that is not encrypted
        if password is None:
            raise ConfigError(f"{path}.key", f"{tls.key} is encrypted: give its password in a file, "
                              "tls.key_password_file") from None
        raise ConfigError(f"{path}.key_password_file", f"{tls.key} is not encrypted: remove "
                          "tls.key_password_file") from None
    except ValueError:
        if encrypted and password is not None:
            raise ConfigError(f"{path}.key_password_file", f"the password in {tls.key_password_file} does not "
                              f"decrypt {tls.key}") from None
        raise ConfigError(f"{path}.key", f"{tls.key} holds no PEM private key") from None


def tls_error(error: BaseException) -> str | None:
    """A short text when a connection ended in a TLS error (a client that does not trust the
    certificate, plain HTTP to a TLS port), else None."""
    if type(error).__module__ != "OpenSSL.SSL":
        return None
    reasons = error.args[0] if error.args and isinstance(error.args[0], list) else []
    text = ", ".join(str(r[-1]) for r in reasons if isinstance(r, tuple) and r[-1])[:200] or type(error).__name__
    if text == "http request":  # OpenSSL's words for a plain HTTP request where a TLS handshake belongs
        return "http request: plain HTTP or ws:// to a TLS listener (the client should use https:// or wss://)"
    return text


def channel_id(transport: Any) -> bytes | None:
    """RFC 5929 tls-unique as Autobahn computes it (autobahn.twisted.util.transport_channel_id): the
    SHA-256 of the client's Finished message; None on a connection without TLS or before the handshake."""
    from twisted.protocols.tls import TLSMemoryBIOProtocol

    if not isinstance(transport, TLSMemoryBIOProtocol):
        return None
    finished = transport.getHandle().get_peer_finished()  # the router is the server: the client's Finished
    return None if finished is None else hashlib.sha256(finished).digest()


def _first(e: Exception) -> str:
    args = e.args[0] if e.args else None
    if isinstance(args, list) and args and isinstance(args[0], tuple):
        return str(args[0][-1])
    return str(e)[:200]
