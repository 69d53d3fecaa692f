"""Where a run's Ray comes from: a fresh local instance, or a named cluster that answers first.

Without an address a run always starts its own local Ray (``address="local"``):
it never joins a cluster that ``ray start`` or ``RAY_ADDRESS`` left behind on
the machine, which may be stale and make ``ray.init`` retry for ever. With an
address, the head is probed first (a TCP connection, then a gRPC handshake:
Ray's head and its client server speak HTTP/2), each step with a short
timeout, so an unreachable cluster, or a port where no Ray head listens, is one
clear error instead of ``ray.init`` retrying for minutes.
"""
from __future__ import annotations

import os
import socket

from oba._errors import UserError
from oba._lazy import lazy_module
from oba.suite.interrupt import SignalWatch

ray = lazy_module("ray")

PROBE_SECONDS = 5.0
CLIENT_SCHEME = "ray://"
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # + empty SETTINGS
_SETTINGS_FRAME = 0x04


class ClusterUnreachable(UserError):
    """The Ray cluster named by ``--address`` is malformed or does not answer."""


def parse_address(address: str) -> tuple[str, int]:
    """``(host, port)`` of ``HOST:PORT`` or ``ray://HOST:PORT`` (Ray Client); anything else raises :class:`ClusterUnreachable`."""
    bare = address[len(CLIENT_SCHEME):] if address.startswith(CLIENT_SCHEME) else address
    host, sep, port = bare.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterUnreachable(
            f"--address {address!r}: expected HOST:PORT of the Ray head (as `ray start --head` prints it) "
            f"or ray://HOST:PORT; leave it out to start a local Ray"
        )
    return host, int(port)


def probe(address: str, timeout: float = PROBE_SECONDS) -> None:
    """Raise :class:`ClusterUnreachable` unless a Ray head answers at ``address`` within ``timeout`` seconds per step.

    The gRPC check is skipped when Ray runs over TLS (``RAY_USE_TLS``), where the
    handshake comes first.
    """
    host, port = parse_address(address)
    hint = "Leave out --address to start a local Ray"
    try:
        connection = socket.create_connection((host, port), timeout=timeout)
    except OSError as err:
        detail = f"no answer within {timeout:g} s" if isinstance(err, TimeoutError) else (err.strerror or str(err))
        raise ClusterUnreachable(
            f"cannot reach the Ray cluster at {address}: {detail}. Is its head running (`ray start --head`) and the "
            f"port open? {hint}"
        ) from err
    with connection:
        if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
            return
        if not _answers_grpc(connection):
            raise ClusterUnreachable(
                f"{address} accepts connections but no Ray head answers there (no gRPC reply within {timeout:g} s): "
                f"give the head's GCS port (`ray start --head --port`, 6379 by default). {hint}"
            )


def _answers_grpc(connection: socket.socket) -> bool:
    """Whether the peer replies to an HTTP/2 client preface with a SETTINGS frame, as every gRPC server does."""
    header = b""
    try:
        connection.sendall(_HTTP2_PREFACE)
        while len(header) < 9:
            chunk = connection.recv(9 - len(header))
            if not chunk:
                return False
            header += chunk
    except OSError:
        return False
    return header[3] == _SETTINGS_FRAME


def start_ray(address: str | None, num_cpus: int | None = None) -> None:
    """``ray.init`` on the cluster at ``address`` (check it with :func:`probe` first), or on a fresh local Ray with ``num_cpus``."""
    options = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address is None:
        ray.init(address="local", num_cpus=num_cpus, **options)
    else:
        ray.init(address=address, **options)


def start_ray_or_stop(address: str | None, num_cpus: int | None, watch: SignalWatch) -> None:
    """Start Ray with SIGINT and SIGTERM only recorded meanwhile, then watch for them again; one that arrived while
    Ray started stops the run like one after it: Ray is shut down and ``KeyboardInterrupt`` raised.

    While ``ray.init`` runs, Ray's own SIGTERM handlers (which exit from wherever the signal lands: inside its
    startup that exit was seen to be swallowed, so the run went on, or to leave the driver to a default action that
    killed it) are not installed; the driver's watch handles the signal once Ray is up.
    """
    ray_utils = getattr(getattr(ray, "_private", None), "utils", None)
    keep_ray_handler = getattr(ray_utils, "set_sigterm_handler", None)
    watch.record_only()
    try:
        if keep_ray_handler is not None:
            ray_utils.set_sigterm_handler = lambda handler: None
        start_ray(address, num_cpus)
    finally:
        if keep_ray_handler is not None:
            ray_utils.set_sigterm_handler = keep_ray_handler
        watch.install()
    if watch.received is not None:
        ray.shutdown()
        raise KeyboardInterrupt(watch.received.name)


def node_local(location: str) -> bool:
    """Whether ``location`` names this machine's own disk: a plain path or a ``file://`` URI."""
    return "://" not in location or location.startswith("file://")


def storage_problems(locations: dict[str, str], nodes: int, shared_mount: bool) -> list[str]:
    """One line per location in ``{what: location}`` that the other nodes of a ``nodes``-node cluster cannot reach.

    A node-local path is refused on more than one node unless ``shared_mount``
    says that it is a mount every node shares at the same path.
    """
    if nodes < 2 or shared_mount:
        return []
    return [
        f"{what} {location} is a folder on this machine's disk, but the Ray cluster has {nodes} nodes: use a URI "
        f"that every node reaches (e.g. s3://bucket/path) or, if it is a mount that every node shares at the same "
        f"path, pass --shared-mount"
        for what, location in locations.items()
        if node_local(location)
    ]


def node_resources() -> list[dict[str, float]]:
    """The total resources of each live node of the Ray cluster this process is connected to."""
    return [dict(node["Resources"]) for node in ray.nodes() if node["Alive"]]


def resource_problems(path: str, cpu: float, gpu: float, nodes: list[dict[str, float]]) -> list[str]:
    """Why no node of a cluster whose nodes have ``nodes`` resources can run one trial asking for ``cpu`` CPUs and
    ``gpu`` GPUs (empty when one can): Ray would otherwise wait for that node for ever."""
    if any(node.get("CPU", 0) >= cpu and node.get("GPU", 0) >= gpu for node in nodes):
        return []
    sizes = sorted({(node.get("CPU", 0), node.get("GPU", 0)) for node in nodes}, reverse=True)
    have = "; ".join(f"{c:g} CPUs and {g:g} GPUs" for c, g in sizes[:3]) or "no live node"
    return [f"{path}: [resources] cpu = {cpu:g}, gpu = {gpu:g}: no node of the Ray cluster has that much for one "
            f"trial (its nodes have {have}); lower [resources] or add a node that has it"]


def alive_nodes() -> int:
    """Number of live nodes of the Ray cluster this process is connected to."""
    return sum(1 for node in ray.nodes() if node["Alive"])
