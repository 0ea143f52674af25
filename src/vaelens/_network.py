"""Bounded waits on the network: the one place vaelens sets how long it waits for an address.

Every network call that can wait (a Ray cluster's address, a Hugging Face hub download) is bounded
by ``network_timeout()`` seconds, ``VAELENS_NETWORK_TIMEOUT`` in the environment (default 10), and
fails in one line naming the address and what to check. An address is tried with a plain TCP
connection first, so an address where nothing listens, or a host that does not resolve, is
refused at once instead of after a library's minutes of retries.
"""

from __future__ import annotations

import math
import os
import socket

from vaelens._errors import VaelensError

TIMEOUT_ENV = "VAELENS_NETWORK_TIMEOUT"
DEFAULT_TIMEOUT = 10.0
HUB_TIMEOUTS = ("HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT")  # read by huggingface_hub when it is imported


def network_timeout() -> float:
    """Seconds any one network wait may take: ``VAELENS_NETWORK_TIMEOUT``, else 10."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise VaelensError(f"{TIMEOUT_ENV} must be a positive number of seconds; got {text!r}")
    return value


def split_address(address: str) -> tuple[str, int]:
    """(host, port) of "HOST:PORT", "[IPv6]:PORT" or "SCHEME://HOST:PORT"; one line if it is neither."""
    scheme, _, rest = address.rpartition("://")
    rest = rest.rstrip("/")
    if scheme == "ray" and rest and not rest.endswith("]") and ":" not in rest:
        rest += ":10001"  # Ray Client's default port
    host, sep, port = rest.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise VaelensError(f"{address!r} is not an address of the form HOST:PORT (or ray://HOST:PORT)")
    return host, int(port)


HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # + empty SETTINGS
SETTINGS = 0x04  # the HTTP/2 frame type every gRPC server sends first


def _speaks_grpc(connection: socket.socket) -> bool:
    """Whether the server behind ``connection`` answers HTTP/2's preface with a SETTINGS frame, as
    a gRPC server (Ray's head, Ray Client) does; a silent or HTTP/1 server does not."""
    try:
        connection.sendall(HTTP2_PREFACE)
        header = b""
        while len(header) < 9:
            chunk = connection.recv(9 - len(header))
            if not chunk:
                return False
            header += chunk
    except OSError:  # a timeout included
        return False
    return header[3] == SETTINGS


def check_reachable(address: str, what: str, fix: str, grpc: bool = False) -> None:
    """Open one TCP connection to ``address`` within ``network_timeout()`` seconds (and, with
    ``grpc``, check that a gRPC server answers there), or fail in one line naming ``what`` is
    expected there, the address, the cause and ``fix``."""
    host, port = split_address(address)
    timeout = network_timeout()
    try:
        with socket.create_connection((host, port), timeout=timeout) as connection:
            if grpc and not _speaks_grpc(connection):
                cause = f"something listens on port {port} but gives no gRPC answer within {timeout:g} s"
                raise VaelensError(f"cannot reach {what} at {address}: {cause}; {fix}")
    except socket.gaierror:
        cause = f"the host {host} is unknown"
    except TimeoutError:
        cause = f"no answer within {timeout:g} s ({TIMEOUT_ENV} sets the wait)"
    except ConnectionRefusedError:
        cause = f"nothing listens on port {port}"
    except OSError as e:
        cause = e.strerror or type(e).__name__
    else:
        return
    raise VaelensError(f"cannot reach {what} at {address}: {cause}; {fix}")


def bound_hub_waits() -> None:
    """Bound the Hugging Face hub's waits by ``network_timeout()`` where the user set none: call it
    before huggingface_hub (or diffusers) is first imported, since the hub reads them then."""
    timeout = network_timeout()
    for name in HUB_TIMEOUTS:
        os.environ.setdefault(name, f"{timeout:g}")
