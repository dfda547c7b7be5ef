"""The Dask cluster a sweep runs on: an embedded ``LocalCluster`` of single-threaded worker
processes forked from one ``forkserver`` that imported the experiment once, or the cluster of a
scheduler address; and Ctrl-C held while a cluster starts or closes, so that neither is left
half-made.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

__all__ = ["client", "sigint_held", "start_forkserver"]


def start_forkserver() -> None:
    """Start multiprocessing's forkserver (if not running) with SIGINT ignored, a disposition
    that it and its forks keep: Ctrl-C in a terminal reaches every process of the group, and
    the sweep, not its workers, handles it (by closing the cluster). This process ignores
    SIGINT only while it forks the server (a few milliseconds)."""
    from multiprocessing import forkserver

    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        forkserver.ensure_running()
    finally:
        if main:
            signal.signal(signal.SIGINT, old)


@contextmanager
def client(scheduler: str | None, workers: int, preload: Sequence[str]) -> Iterator[Any]:
    """A Dask client of the cluster at ``scheduler``, or of an embedded cluster of ``workers``
    single-threaded worker processes, closed at the end.

    The embedded workers are forks of one ``forkserver`` process that imports ``preload``
    once (where the platform has it), so that starting or restarting a worker costs a fork,
    not a fresh interpreter importing numpy and the experiment, and no worker imports them
    again on its first run.
    """
    if scheduler is not None:
        from distributed import Client

        try:
            with sigint_held():
                client = Client(scheduler, timeout="10s")
        except (OSError, ValueError, TypeError) as err:
            raise ValueError(f"scheduler: cannot connect to {scheduler!r} ({err})") from err
        try:
            yield client
        finally:
            with sigint_held(raise_after=False):  # a second Ctrl-C while the client closes
                client.close()
        return
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    preload = ["distributed", "matplotlib.pyplot", *preload]
    if method == "forkserver":
        # started first: it imports while this process imports distributed and starts the
        # scheduler (the list distributed sets later applies to a server started later)
        multiprocessing.get_context("forkserver").set_forkserver_preload(preload)
        start_forkserver()
    import dask
    from distributed import Client, LocalCluster

    cluster = client = None
    try:
        # a cluster interrupted while it starts could not be closed: a Ctrl-C waits for it
        with (
            sigint_held(),
            dask.config.set({"distributed.worker.multiprocessing-method": method}),
        ):
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",  # any free port: several sweeps may run at once
                silence_logs=logging.CRITICAL,  # a run's error is its row in failed.csv
            )
            client = Client(cluster)
        yield client
    finally:
        with sigint_held(raise_after=False):  # a second Ctrl-C while the cluster closes
            if client is not None:
                client.close()
            if cluster is not None:
                cluster.close()


@contextmanager
def sigint_held(raise_after: bool = True) -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) that arrives within the block: raise it as ``KeyboardInterrupt``
    when the block ends (``raise_after``) or drop it. Only the main thread handles signals;
    elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
    if held and raise_after:
        raise KeyboardInterrupt
