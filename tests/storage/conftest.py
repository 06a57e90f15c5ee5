"""Fixtures for the storage tests: moto's S3 server on loopback (real HTTP) and a TCP
proxy that can cut a response stream, for the S3 backend."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import struct
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from opscenter.stores.s3 import S3Storage

# Never look for credentials on an instance metadata service, whatever the host.
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

ACCESS_KEY_ID = "AKIAOPSCENTERTEST01"
#: Distinctive, so a test can prove it never appears in a message.
SECRET_ACCESS_KEY = "oc-secret-" + secrets.token_hex(12)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server in a thread on 127.0.0.1, a free port."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def raw_client(endpoint: str, service: str = "s3", **kwargs: Any) -> Any:
    """A plain boto3 client, to look at the bucket behind the backend's back."""
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=kwargs.pop("access_key_id", ACCESS_KEY_ID),
        aws_secret_access_key=kwargs.pop("secret_access_key", SECRET_ACCESS_KEY),
        **kwargs,
    )


@pytest.fixture(scope="session")
def raw_s3(s3_endpoint: str) -> Any:
    return raw_client(s3_endpoint)


@pytest.fixture
def bucket(raw_s3: Any) -> Iterator[str]:
    """A fresh bucket per test, emptied afterwards (moto keeps objects in memory)."""
    name = f"oc-test-{secrets.token_hex(6)}"
    raw_s3.create_bucket(Bucket=name)
    yield name
    for up in raw_s3.list_multipart_uploads(Bucket=name).get("Uploads", []):
        raw_s3.abort_multipart_upload(Bucket=name, Key=up["Key"], UploadId=up["UploadId"])
    for page in raw_s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        for obj in page.get("Contents", []):
            raw_s3.delete_object(Bucket=name, Key=obj["Key"])


@pytest.fixture
async def make_s3(s3_endpoint: str, bucket: str) -> AsyncIterator[Callable[..., S3Storage]]:
    """Factory: an S3Storage on the test bucket; keyword arguments override defaults."""
    made: list[S3Storage] = []

    def make(**overrides: Any) -> S3Storage:
        options: dict[str, Any] = {
            "bucket": bucket,
            "endpoint_url": s3_endpoint,
            "region": "us-east-1",
            "access_key_id": ACCESS_KEY_ID,
            "secret_access_key": SECRET_ACCESS_KEY,
            "addressing_style": "path",
        }
        options.update(overrides)
        storage = S3Storage(**options)
        made.append(storage)
        return storage

    yield make
    for storage in made:
        await storage.close()


@pytest.fixture
def s3(make_s3: Callable[..., S3Storage]) -> S3Storage:
    return make_s3()


class CuttingProxy:
    """A loopback TCP proxy. Once armed with ``cut(after)``, it resets the connection
    that carries the ``after``-th byte from the server from then on, once."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.cuts = 0
        self._armed: int | None = None
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._socks: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self, after: int) -> None:
        with self._lock:
            self._armed = after

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            self._socks += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, downstream: bool) -> None:
        try:
            while data := src.recv(65536):
                if downstream:
                    with self._lock:
                        fire = False
                        if self._armed is not None:
                            self._armed -= len(data)
                            if self._armed <= 0:
                                self._armed, fire = None, True
                                self.cuts += 1
                    if fire:
                        # Linger 0: the client's socket is reset (or at least sees an
                        # early end of the body); shutdown also wakes the other thread.
                        dst.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        for s in (dst, src):
                            with contextlib.suppress(OSError):
                                s.shutdown(socket.SHUT_RDWR)
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.close()


@pytest.fixture
def cutting_proxy(s3_endpoint: str) -> Iterator[CuttingProxy]:
    host, port = s3_endpoint.removeprefix("http://").rsplit(":", 1)
    proxy = CuttingProxy((host, int(port)))
    yield proxy
    proxy.close()
