"""TLS for every connection to Deribit: one verifying client context, and one way to say why it failed.

Capture's WebSockets (either transport) and the one-shot public calls (discovery's listing and
index price, the ``auto`` live chain) all build their context here, so one rule holds everywhere:
a ``wss://`` URL is verified against the system trust store, or against the CA bundle named by
``deribit.tls_ca_file`` instead, with hostname checking on. There is no switch to turn verification
off and no fallback to an unverified connection: a certificate that does not verify is an error
(:class:`CertificateVerificationError`) naming the problem, the URL and what to change.
"""

from __future__ import annotations

import ssl

CA_FILE_KEY = "deribit.tls_ca_file"
# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH: no CA bundle fixes these.
_NAME_MISMATCH_CODES = frozenset({62, 64})
# X509_V_ERR_CERT_NOT_YET_VALID and X509_V_ERR_CERT_HAS_EXPIRED: the CA is fine, the dates are not.
_VALIDITY_CODES = frozenset({9, 10})


class CertificateVerificationError(ConnectionError):
    """The server's certificate failed verification; the message names the problem, the URL and the remedy."""


def verifying_context(ca_file: str | None = None) -> ssl.SSLContext:
    """A client context that verifies the server's certificate and hostname.

    ``ca_file`` replaces the system trust store (as ``curl --cacert`` does), so that a private CA is
    trusted for Deribit alone, not added to what every other certificate is checked against.
    Raises ``OSError`` or ``ssl.SSLError`` when the file cannot be read or holds no certificate.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    # create_default_context already does both; stated so that no later edit loosens it silently.
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_ssl_context(url: str, ca_file: str | None = None) -> ssl.SSLContext | None:
    """The context for connecting to ``url``: verifying for ``wss://``, ``None`` for plain ``ws://``.

    Built afresh for every connection attempt: a CA file replaced on disk is read at the next
    attempt, without a restart.
    """
    if not url.startswith("wss://"):
        return None
    return verifying_context(ca_file)


def verification_error(exc: BaseException, url: str, ca_file: str | None = None) -> CertificateVerificationError | None:
    """The clear error for ``exc`` when a certificate verification failure is in it (or its causes), else ``None``.

    WebSocket libraries raise ``ssl.SSLCertVerificationError`` bare or wrapped, and some with an empty
    message (picows); its ``verify_message`` is what OpenSSL said, which is what a person needs.
    """
    failure = _find_verification_failure(exc)
    if failure is None:
        return None
    problem = failure.verify_message or failure.reason or str(failure) or "unknown reason"
    return CertificateVerificationError(
        f"TLS certificate verification failed for {url}: certificate verify failed: {problem} "
        f"({_remedy(failure.verify_code, ca_file)})"
    )


def _find_verification_failure(exc: BaseException | None) -> ssl.SSLCertVerificationError | None:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _remedy(verify_code: int | None, ca_file: str | None) -> str:
    if verify_code in _NAME_MISMATCH_CODES:
        return "the URL's host must be a name the server's certificate is issued for"
    if verify_code in _VALIDITY_CODES:
        return "the server's certificate is outside its validity period: check this machine's clock"
    if ca_file is None:
        return f"set {CA_FILE_KEY} to a CA bundle that signs the server's certificate"
    return f"{CA_FILE_KEY} ({ca_file}) holds no CA that signs the server's certificate"
