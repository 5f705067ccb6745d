"""The broker's TLS material: its certificate and key, and the CA its clients' certificates must chain to.

One `ServerTls` serves every listener (gRPC, the metrics endpoint, the Kafka listener). The files are
read again when they change on disk (checked at most once a second, at a handshake) or on `reload()`
(SIGHUP): a renewed certificate is used by the next connection, and the listeners never close. A file
that cannot be read, or a key that does not match its certificate, keeps the material already loaded,
with a warning: a half-written renewal never takes a listener down.

TLS 1.2 is the oldest version accepted (gRPC's own floor, and set on the ssl contexts).
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from dataclasses import dataclass

import grpc

from ..errors import InvalidConfigError

log = logging.getLogger("tidelog.security")

CHECK_EVERY_S = 1.0
"""How often a handshake looks at the files' modification times."""


@dataclass(frozen=True)
class _Material:
    cert: bytes
    key: bytes
    client_ca: bytes | None
    stamp: tuple


class ServerTls:
    """cert_file (PEM chain), key_file (PEM key) and, for mutual TLS, client_ca_file (PEM CAs a client
    certificate must chain to; then every client must present one)."""

    def __init__(self, cert_file: str, key_file: str, client_ca_file: str = "") -> None:
        self.cert_file, self.key_file, self.client_ca_file = cert_file, key_file, client_ca_file
        self._lock = threading.Lock()
        self._material = self._read()  # raises InvalidConfigError: a broker does not start on bad material
        self._checked = time.monotonic()
        self._contexts: list[ssl.SSLContext] = []
        self.reloads = 0
        """Times new material was loaded after the first."""

    @property
    def mutual(self) -> bool:
        return bool(self.client_ca_file)

    def reload(self) -> bool:
        """Read the files again now (SIGHUP); True if new material was loaded."""
        with self._lock:
            return self._refresh(force=True)

    # -- gRPC ----------------------------------------------------------------------------------------------
    def grpc_credentials(self) -> grpc.ServerCredentials:
        """Credentials whose certificate follows the files: gRPC asks before each handshake."""
        first = self._grpc_config(self._material)
        served = [self._material]

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            with self._lock:
                self._refresh(force=False)
                material = self._material
            if material is served[0]:
                return None  # unchanged: gRPC keeps what it has
            served[0] = material
            return self._grpc_config(material)

        return grpc.dynamic_ssl_server_credentials(first, fetch, require_client_authentication=self.mutual)

    @staticmethod
    def _grpc_config(material: _Material) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(material.key, material.cert)], material.client_ca)

    # -- ssl contexts (metrics endpoint, Kafka listener) ------------------------------------------------------
    def ssl_context(self) -> ssl.SSLContext:
        """A server context with this material, TLS 1.2 at least, client certificates required under
        mutual TLS; reloaded in place when the files change (before the next handshake that notices)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._load_into(context, self._material)
        with self._lock:
            self._contexts.append(context)
        # asyncio and http.server both call wrap/handshake through the context: look at the files first
        context.sni_callback = lambda *_: self._check_files()
        return context

    def _check_files(self) -> None:
        with self._lock:
            self._refresh(force=False)

    def _load_into(self, context: ssl.SSLContext, material: _Material) -> None:
        # ssl loads a chain from files only, so the files are read once more (they were just checked)
        context.load_cert_chain(self.cert_file, self.key_file)
        if material.client_ca is not None:
            context.load_verify_locations(cadata=material.client_ca.decode("ascii", "replace"))
            context.verify_mode = ssl.CERT_REQUIRED

    # -- the files ------------------------------------------------------------------------------------------
    def _stamp(self) -> tuple:
        stamps = []
        for path in (self.cert_file, self.key_file, self.client_ca_file):
            if path:
                st = os.stat(path)
                stamps.append((st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(stamps)

    def _refresh(self, force: bool) -> bool:
        """With the lock held: load the files again if they changed (or force). Never raises."""
        now = time.monotonic()
        if not force and now - self._checked < CHECK_EVERY_S:
            return False
        self._checked = now
        try:
            if not force and self._stamp() == self._material.stamp:
                return False
            material = self._read()
            for context in self._contexts:
                self._load_into(context, material)
        except (InvalidConfigError, OSError, ssl.SSLError) as exc:
            log.warning(
                "TLS files not reloaded (%s); the certificate already loaded stays in use",
                exc,
                extra={"event": "tls_reload_failed"},
            )
            return False
        if material == self._material:
            return False
        self._material = material
        self.reloads += 1
        log.info("TLS certificate reloaded", extra={"event": "tls_reloaded", "cert_file": self.cert_file})
        return True

    def _read(self) -> _Material:
        """The files' bytes, checked by loading them into a throwaway context (key matches certificate)."""
        try:
            stamp = self._stamp()
            with open(self.cert_file, "rb") as f:
                cert = f.read()
            with open(self.key_file, "rb") as f:
                key = f.read()
            client_ca = None
            if self.client_ca_file:
                with open(self.client_ca_file, "rb") as f:
                    client_ca = f.read()
            probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            probe.load_cert_chain(self.cert_file, self.key_file)
            if client_ca is not None:
                probe.load_verify_locations(cadata=client_ca.decode("ascii", "replace"))
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise InvalidConfigError(f"cannot use the TLS files ({self.cert_file}, {self.key_file}): {exc}") from None
        return _Material(cert, key, client_ca, stamp)
