"""A lease on a results location: one driver (or one compaction) at a time, visibly.

The lease is a small JSON file in the location (``_lease.json`` for runs,
``_compaction.json`` for compactions) naming its owner (host, pid, what it is
doing), when it started and when it was last renewed. The holder renews it from
a background thread every ``ttl / 4`` seconds; a lease not renewed for ``ttl``
seconds has expired and may be taken over.

Taking a lease works on any pyarrow filesystem, object stores without conditional
writes included: read the lease; refuse at once when another owner's is live;
else write ours, wait ``settle`` seconds, and read it back — whoever's token is
there then holds it, the others refuse. Two contenders both win only if one of
them takes longer than ``settle`` between reading the lease and writing its own
(one request each), or if the store is not read-after-write consistent (S3 has
been since 2020). Expiry compares the writer's clock with the reader's: hosts'
clocks must agree to well within ``ttl``. A holder that finds another token at
renewal has lost its lease (``lost`` is set) and stops renewing.

On Linux a lease also records its owner's process identity (boot id, pid
namespace, pid, process start time): a contender on the same machine and in the
same pid namespace sees at once that the owner is gone (killed, crashed) and
takes the lease over without waiting for it to expire.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass, replace
from typing import Any

import pyarrow as pa
from typing_extensions import Self

from oba._errors import UserError
from oba.store.atomic_write import write_atomic
from oba.store.results import filesystem

RUN_LEASE = "_lease.json"
_PROC = "/proc"
COMPACTION_LEASE = "_compaction.json"
DEFAULT_TTL = 60.0
DEFAULT_SETTLE = 1.0


def process_identity(pid: int) -> str:
    """``boot id:pid namespace:pid:start time`` of a live Linux process ("" when it is gone or off Linux)."""
    try:
        with open(f"{_PROC}/sys/kernel/random/boot_id") as boot, open(f"{_PROC}/{pid}/stat") as stat:
            started = stat.read().rsplit(")", 1)[1].split()[19]
            return f"{boot.read().strip()}:{os.stat(f'{_PROC}/{pid}/ns/pid').st_ino}:{pid}:{started}"
    except (OSError, IndexError):
        return ""


def _machine(identity: str) -> str:
    return identity.rsplit(":", 2)[0]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _clock(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class LeaseRecord:
    """Who holds a lease, doing what, since when, last renewed when, and for how long a renewal lasts."""

    host: str
    pid: int
    purpose: str
    token: str
    started: dt.datetime
    renewed: dt.datetime
    ttl_seconds: float
    suite: str = ""
    """The suite a run works on ("" for other purposes)."""
    process: str = ""
    """The owner's :func:`process_identity` ("" off Linux)."""

    def owner_gone(self) -> bool:
        """Whether the owner is known dead: same machine and pid namespace as us, and its process is gone."""
        mine = process_identity(os.getpid())
        return bool(self.process and mine and _machine(self.process) == _machine(mine)
                    and process_identity(self.pid) != self.process)

    def expired(self, now: dt.datetime | None = None) -> bool:
        """Whether ``ttl_seconds`` have passed since the last renewal, or its owner is known dead."""
        return ((now or _now()) - self.renewed).total_seconds() > self.ttl_seconds or self.owner_gone()

    def describe(self, now: dt.datetime | None = None) -> str:
        """One line: owner, purpose, since when, last renewal."""
        age = ((now or _now()) - self.renewed).total_seconds()
        if self.owner_gone():
            state = f"its process is gone (last renewed {age:.0f} s ago)"
        elif self.expired(now):
            state = f"expired {age - self.ttl_seconds:.0f} s ago"
        else:
            state = f"renewed {age:.0f} s ago"
        return f"{self.purpose} on {self.host} (pid {self.pid}) since {_clock(self.started)}, {state}"

    def to_json(self) -> str:
        payload: dict[str, Any] = asdict(self)
        payload["started"], payload["renewed"] = self.started.isoformat(), self.renewed.isoformat()
        return json.dumps(payload, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LeaseRecord:
        payload = json.loads(text)
        return cls(host=str(payload["host"]), pid=int(payload["pid"]), purpose=str(payload["purpose"]),
                   token=str(payload["token"]), started=dt.datetime.fromisoformat(payload["started"]),
                   renewed=dt.datetime.fromisoformat(payload["renewed"]), ttl_seconds=float(payload["ttl_seconds"]),
                   suite=str(payload.get("suite", "")), process=str(payload.get("process", "")))


class LeaseHeld(UserError):
    """Another live owner holds the lease; ``holder`` says who."""

    def __init__(self, location: str, holder: LeaseRecord | None) -> None:
        who = holder.describe() if holder is not None else "another driver that took it at the same moment"
        super().__init__(f"results {location} are in use by {who}; wait for it to end (or for its lease to expire)")
        self.holder = holder


def read_lease(location: str, name: str = RUN_LEASE) -> LeaseRecord | None:
    """The lease ``name`` of ``location`` (None when there is none or it is unreadable)."""
    fs, root = filesystem(location)
    try:
        with fs.open_input_stream(f"{root}/{name}") as source:
            return LeaseRecord.from_json(source.read().decode())
    except (OSError, pa.ArrowException, ValueError, KeyError, TypeError):
        return None


class Lease:
    """Hold the lease ``name`` on ``location`` while a ``with`` block runs (renewed in the background).

    Raises :class:`LeaseHeld` on entry when another owner's lease is live.
    """

    def __init__(self, location: str, purpose: str, *, name: str = RUN_LEASE, ttl: float = DEFAULT_TTL,
                 settle: float = DEFAULT_SETTLE, suite: str = "") -> None:
        self.location, self.name, self.ttl, self.settle = location, name, ttl, settle
        self.fs, self.root = filesystem(location)
        self.path = f"{self.root}/{name}"
        started = _now()
        self.record = LeaseRecord(socket.gethostname(), os.getpid(), purpose, uuid.uuid4().hex, started, started, ttl,
                                  suite, process_identity(os.getpid()))
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _write(self, record: LeaseRecord) -> None:
        write_atomic(self.fs, self.path, lambda sink: sink.write(record.to_json().encode()))

    def acquire(self) -> None:
        """Take the lease or raise :class:`LeaseHeld` naming its live owner."""
        current = read_lease(self.location, self.name)
        if current is not None and current.token != self.record.token and not current.expired():
            raise LeaseHeld(self.location, current)
        self.fs.create_dir(self.root, recursive=True)
        self._write(self.record)
        time.sleep(self.settle)
        current = read_lease(self.location, self.name)
        if current is None or current.token != self.record.token:
            raise LeaseHeld(self.location, current)
        self._renewer = threading.Thread(target=self._renew, name=f"oba-lease-{self.name}", daemon=True)
        self._renewer.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            current = read_lease(self.location, self.name)
            if current is None or current.token != self.record.token:
                self.lost.set()
                return
            renewed = replace(self.record, renewed=_now())
            try:
                self._write(renewed)
            except (OSError, pa.ArrowException):
                continue
            self.record = renewed

    def release(self) -> None:
        """Stop renewing and remove the lease when it is still ours."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        current = read_lease(self.location, self.name)
        if current is not None and current.token == self.record.token:
            try:
                self.fs.delete_file(self.path)
            except (OSError, pa.ArrowException):
                pass

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
