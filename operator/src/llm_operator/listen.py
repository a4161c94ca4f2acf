"""The `HOST:PORT` form of listen addresses, read by the CLI and the metrics endpoint."""

from __future__ import annotations


def listen_address(value: str) -> tuple[str, int] | None:
    """`HOST:PORT` (or `[IPv6]:PORT`, or `:PORT` for every interface) as (host, port);
    None for an empty value, which turns the metrics endpoint off.
    """
    if not value:
        return None
    host, colon, port = value.rpartition(":")
    if not colon or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT with a port in 1-65535, got {value!r}")
    # start_http_server takes a bare IPv6 address, without the URL brackets.
    return host.removeprefix("[").removesuffix("]") or "0.0.0.0", int(port)
