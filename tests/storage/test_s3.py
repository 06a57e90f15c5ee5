"""S3Storage against moto's S3 server on loopback: real HTTP, faults injected with
botocore hooks (503s, slowness), a TCP proxy (a response cut mid-body) and moto's own
IAM checks (wrong credentials)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.server
import json
import os
import secrets
import socket
import stat
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.awsrequest import AWSResponse

from opscenter.stores.backends import StorageBackend, StorageError, StorageReader, StorageWriter
from opscenter.stores.s3 import S3Storage, part_size_for
from opscenter.streaming.crypto import generate_identity, recipient_of
from opscenter.streaming.manifest import read_manifest, scan_catalog
from opscenter.streaming.pipeline import BackupOptions, run_backup
from opscenter.streaming.restore import run_restore
from opscenter.streaming.sinks import DirectoryTarget, SqliteTarget
from opscenter.streaming.sources import DirectorySource, SqliteSource
from opscenter.streaming.verification import quick_verify

from .conftest import ACCESS_KEY_ID, SECRET_ACCESS_KEY, CuttingProxy, raw_client

MiB = 1 << 20


async def put(storage: S3Storage, key: str, data: bytes, chunk: int = MiB, **kw: Any) -> Any:
    writer = await storage.open_writer(key, **kw)
    async with writer:
        for i in range(0, len(data), chunk):
            await writer.write(data[i : i + chunk])
        return await writer.commit()


async def get(
    storage: S3Storage, key: str, offset: int = 0, length: int | None = None, size: int = MiB
) -> bytes:
    reader = await storage.open_reader(key, offset=offset, length=length)
    out = bytearray()
    async with reader:
        while chunk := await reader.read(size):
            out += chunk
    return bytes(out)


def uploads(raw_s3: Any, bucket: str) -> list[dict[str, Any]]:
    return list(raw_s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def keys(raw_s3: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in raw_s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Any:
        yield self.data


def fail_with(status: int, code: str, times: int | None) -> tuple[Callable[..., Any], list[int]]:
    """A ``before-send`` hook answering ``status`` instead of the endpoint, ``times``
    times (``None``: always); the list counts the requests it saw."""
    seen: list[int] = []
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>injected</Message></Error>"
    ).encode()

    def hook(request: Any, **_: Any) -> AWSResponse | None:
        seen.append(1)
        if times is None or len(seen) <= times:
            return AWSResponse(
                request.url, status, {"Content-Type": "application/xml"}, _Body(body)
            )
        return None

    return hook, seen


def test_protocol_conformance(s3: S3Storage) -> None:
    assert isinstance(s3, StorageBackend)
    assert SECRET_ACCESS_KEY not in repr(s3)


async def test_multipart_round_trip(s3: S3Storage, raw_s3: Any, bucket: str) -> None:
    data = os.urandom(20 * MiB + 12345)
    writer = await s3.open_writer("db/prod/big.dump")
    assert isinstance(writer, StorageWriter)
    async with writer:
        for i in range(0, 17 * MiB, MiB):
            await writer.write(data[i : i + MiB])
        # Two parts are uploaded (or uploading): nothing is visible yet.
        assert writer.upload_id is not None
        assert not await s3.exists("db/prod/big.dump")
        assert keys(raw_s3, bucket) == []
        assert [u["Key"] for u in uploads(raw_s3, bucket)] == ["db/prod/big.dump"]
        await writer.write(data[17 * MiB :])
        info = await writer.commit()
    assert info.key == "db/prod/big.dump" and info.size == len(data)
    head = raw_s3.head_object(Bucket=bucket, Key="db/prod/big.dump")
    assert head["ETag"].strip('"').endswith("-3")  # 8 + 8 + 4 MiB parts
    assert uploads(raw_s3, bucket) == []
    back = await get(s3, "db/prod/big.dump")
    assert hashlib.sha256(back).hexdigest() == hashlib.sha256(data).hexdigest()
    st = await s3.stat("db/prod/big.dump")
    assert st.size == len(data) and abs(st.modified - time.time()) < 120


_MEMORY_PROBE = """
import asyncio, json, os, sys, tracemalloc
from opscenter.stores.s3 import S3Storage

async def main() -> None:
    s3 = S3Storage(**json.loads(sys.argv[1]))
    await s3.check()  # client created, models loaded: not counted
    chunk = os.urandom(1 << 20)
    tracemalloc.start()
    writer = await s3.open_writer("k/bounded")
    for _ in range(40):
        await writer.write(chunk)
    info = await writer.commit()
    print(json.dumps({"size": info.size, "peak": tracemalloc.get_traced_memory()[1]}))

asyncio.run(main())
"""


async def test_writer_memory_is_bounded(s3_endpoint: str, bucket: str) -> None:
    """A 40 MiB upload peaks at about two parts (the one uploading and the one
    filling), measured with tracemalloc in a process of its own."""
    options = {
        "bucket": bucket,
        "endpoint_url": s3_endpoint,
        "access_key_id": ACCESS_KEY_ID,
        "secret_access_key": SECRET_ACCESS_KEY,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _MEMORY_PROBE,
        json.dumps(options),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    result = json.loads(out)
    assert result["size"] == 40 * MiB
    assert 16 * MiB < result["peak"] < 2 * 8 * MiB + 3 * MiB, result["peak"] / MiB


async def test_ranges(s3: S3Storage) -> None:
    data = os.urandom(9 * MiB)
    await put(s3, "r/obj", data, chunk=3 * MiB)
    assert await get(s3, "r/obj", 5, 10) == data[5:15]
    assert await get(s3, "r/obj", 8 * MiB - 3, 7) == data[8 * MiB - 3 : 8 * MiB + 4]
    assert await get(s3, "r/obj", 9 * MiB - 100) == data[-100:]
    assert await get(s3, "r/obj", 100, 10 * MiB) == data[100:]  # length past the end
    assert await get(s3, "r/obj", 9 * MiB + 5) == b""  # offset past the end
    assert await get(s3, "r/obj", 0, 0) == b""
    assert await get(s3, "r/obj", 0, 1000, size=7) == data[:1000]  # small reads
    reader = await s3.open_reader("r/obj", offset=3, length=4)
    assert isinstance(reader, StorageReader)
    await reader.close()
    with pytest.raises(StorageError) as info:
        await reader.read()
    assert info.value.code == "closed"
    for kwargs in ({"offset": -1}, {"length": -1}):
        with pytest.raises(StorageError) as info:
            await s3.open_reader("r/obj", **kwargs)
        assert info.value.code == "invalid_range"
    for length in (None, 0):
        with pytest.raises(StorageError) as info:
            await s3.open_reader("r/missing", length=length)
        assert info.value.code == "not_found" and not info.value.retryable


async def test_small_objects_list_stat_delete(
    make_s3: Callable[..., S3Storage], raw_s3: Any, bucket: str
) -> None:
    s3 = make_s3(prefix="team-1/backups/")
    s3.list_page_size = 2  # exercise ListObjectsV2 pagination
    for name in ("a/1", "a/2", "a/3", "b/1", "a/sub/4"):
        info = await put(s3, name, name.encode() * 10)
        assert info.size == len(name) * 10
    await put(s3, "empty", b"")
    assert uploads(raw_s3, bucket) == []  # small objects: one PutObject, no multipart
    # Foreign names beside ours are never listed: a "folder" marker, a partial marker,
    # a check probe, and objects outside the prefix.
    for foreign in ("team-1/backups/a/", "team-1/backups/a/x.partial", "team-1/backups/.probe"):
        raw_s3.put_object(Bucket=bucket, Key=foreign, Body=b"x")
    raw_s3.put_object(Bucket=bucket, Key="team-2/a/1", Body=b"x")
    assert "team-1/backups/a/1" in keys(raw_s3, bucket)

    listed = [(i.key, i.size) async for i in s3.list("a/")]
    assert listed == [("a/1", 30), ("a/2", 30), ("a/3", 30), ("a/sub/4", 70)]
    assert [i.key async for i in s3.list()] == ["a/1", "a/2", "a/3", "a/sub/4", "b/1", "empty"]
    assert [i.key async for i in s3.list("a/s")] == ["a/sub/4"]
    assert [i.key async for i in s3.list("zzz/")] == []
    assert (await s3.stat("empty")).size == 0
    assert await get(s3, "empty") == b""
    assert await get(s3, "a/sub/4") == b"a/sub/4" * 10

    space = await s3.space()
    assert (space.total_bytes, space.free_bytes) == (None, None)
    assert space.used_bytes == 30 * 3 + 70 + 30
    assert (await s3.space(max_objects=3)).used_bytes is None

    assert await s3.exists("a/1")
    await s3.delete("a/1")
    await s3.delete("a/1")  # idempotent
    await s3.delete("never/was")
    assert not await s3.exists("a/1")
    with pytest.raises(StorageError) as info:
        await s3.stat("a/1")
    assert info.value.code == "not_found"
    assert "team-2/a/1" in keys(raw_s3, bucket)


async def test_invalid_keys_refused_before_any_request(s3: S3Storage) -> None:
    for bad in ("", "/abs", "a/../b", "a//b", "a/.hidden", "x.partial", "a\\b"):
        with pytest.raises(StorageError) as info:
            await s3.open_writer(bad)
        assert info.value.code == "invalid_key"
        with pytest.raises(StorageError):
            await s3.stat(bad)
    with pytest.raises(StorageError) as info:
        [i async for i in s3.list("../")]
    assert info.value.code == "invalid_key"


def test_config_validation() -> None:
    ok: dict[str, Any] = {"bucket": "my-bucket", "endpoint_url": "https://s3.example.test"}
    S3Storage(**ok)
    for bad in (
        {"bucket": "x"},
        {"bucket": "Bad_Bucket!"},
        {"endpoint_url": "ftp://host"},
        {"endpoint_url": "https://user:pw@host"},
        {"part_size": 1 * MiB},
        {"addressing_style": "sideways"},
        {"max_attempts": 0},
        {"access_key_id": "only-the-id"},
        {"prefix": "../up"},
    ):
        with pytest.raises(ValueError):
            S3Storage(**{**ok, **bad})
    assert S3Storage(**ok, prefix="/a/b/").prefix == "a/b/"
    assert part_size_for(1) == part_size_for(1000) == 8 * MiB
    assert part_size_for(1001) == 16 * MiB
    assert part_size_for(10_000) == 512 * MiB


async def test_exists_is_refused(s3: S3Storage, raw_s3: Any, bucket: str) -> None:
    await put(s3, "k/one", b"first")
    with pytest.raises(StorageError) as info:
        await s3.open_writer("k/one")
    assert info.value.code == "exists"
    # Two writers race for the same key: the second commit is refused (small and
    # multipart objects alike), the first object is intact, no upload is left.
    for size in (100, 9 * MiB):
        key = f"k/race-{size}"
        w1 = await s3.open_writer(key)
        w2 = await s3.open_writer(key)
        payload = os.urandom(size)
        await w1.write(payload)
        await w2.write(os.urandom(size))
        await w1.commit()
        with pytest.raises(StorageError) as info:
            await w2.commit()
        assert info.value.code == "exists"
        assert await get(s3, key) == payload
    assert uploads(raw_s3, bucket) == []
    # overwrite=True replaces.
    await put(s3, "k/one", b"second", overwrite=True)
    assert await get(s3, "k/one") == b"second"


async def test_failure_mid_upload_leaves_nothing(s3: S3Storage, raw_s3: Any, bucket: str) -> None:
    class SourceDied(Exception):
        pass

    writer = await s3.open_writer("k/interrupted")
    with pytest.raises(SourceDied):
        async with writer:
            for _ in range(17):  # two full 8 MiB parts, and a bit of the third
                await writer.write(os.urandom(MiB))
            assert writer.upload_id is not None
            raise SourceDied
    assert uploads(raw_s3, bucket) == []
    assert keys(raw_s3, bucket) == []
    with pytest.raises(StorageError) as info:
        await writer.write(b"more")
    assert info.value.code == "closed"
    await writer.abort()  # again: harmless
    # An explicit abort after parts went up, then a commit, is refused.
    writer = await s3.open_writer("k/aborted")
    await writer.write(os.urandom(9 * MiB))
    await writer.abort()
    with pytest.raises(StorageError) as info:
        await writer.commit()
    assert info.value.code == "closed"
    assert uploads(raw_s3, bucket) == [] and keys(raw_s3, bucket) == []


async def test_cancel_while_a_part_is_uploading_leaves_nothing(
    s3: S3Storage, raw_s3: Any, bucket: str
) -> None:
    """The abort waits for the part in flight, then aborts the upload: no part lands
    after the abort."""
    uploading = asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow(**_: Any) -> None:
        loop.call_soon_threadsafe(uploading.set)
        time.sleep(0.5)

    s3.client.meta.events.register("before-send.s3.UploadPart", slow)

    async def backup() -> None:
        writer = await s3.open_writer("k/cancelled")
        async with writer:
            while True:
                await writer.write(os.urandom(MiB))

    task = asyncio.create_task(backup())
    await uploading.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert uploads(raw_s3, bucket) == [] and keys(raw_s3, bucket) == []


async def test_503_once_then_success(s3: S3Storage, raw_s3: Any, bucket: str) -> None:
    hook, seen = fail_with(503, "ServiceUnavailable", times=1)
    s3.client.meta.events.register("before-send.s3.UploadPart", hook)
    data = os.urandom(18 * MiB)
    info = await put(s3, "k/flaky", data)
    assert info.size == len(data)
    assert len(seen) == 4  # 3 parts + 1 retry
    assert hashlib.sha256(await get(s3, "k/flaky")).digest() == hashlib.sha256(data).digest()
    assert uploads(raw_s3, bucket) == []


async def test_completion_whose_answer_was_lost_is_confirmed(
    s3: S3Storage, raw_s3: Any, bucket: str
) -> None:
    """CompleteMultipartUpload succeeds but its answer is lost (503); the retry gets
    NoSuchUpload, as from S3. The object is ours if its ETag is the one our parts imply."""
    calls: list[int] = []

    def hook(request: Any, **_: Any) -> AWSResponse | None:
        calls.append(1)
        if len(calls) == 1:
            s3.client._endpoint.http_session.send(request)  # really completes
            return AWSResponse(request.url, 503, {}, _Body(b""))
        body = b"<Error><Code>NoSuchUpload</Code><Message>gone</Message></Error>"
        return AWSResponse(request.url, 404, {}, _Body(body))

    s3.client.meta.events.register("before-send.s3.CompleteMultipartUpload", hook)
    data = os.urandom(17 * MiB)
    info = await put(s3, "k/lost-answer", data)
    assert len(calls) == 2 and info.size == len(data)
    assert await get(s3, "k/lost-answer") == data
    assert uploads(raw_s3, bucket) == []


async def test_throttling_on_put_is_retried(s3: S3Storage) -> None:
    hook, seen = fail_with(503, "SlowDown", times=1)
    s3.client.meta.events.register("before-send.s3.PutObject", hook)
    await put(s3, "k/small", b"tiny")
    assert len(seen) == 2
    assert await get(s3, "k/small") == b"tiny"


async def test_persistent_503_fails_retryable_and_aborts(
    make_s3: Callable[..., S3Storage], raw_s3: Any, bucket: str
) -> None:
    s3 = make_s3(max_attempts=3)
    hook, seen = fail_with(503, "ServiceUnavailable", times=None)
    s3.client.meta.events.register("before-send.s3.UploadPart", hook)
    writer = await s3.open_writer("k/down")
    with pytest.raises(StorageError) as info:
        async with writer:
            for _ in range(20):
                await writer.write(os.urandom(MiB))
            await writer.commit()
    err = info.value
    assert err.code == "io_error" and err.retryable
    assert "503" in err.message and "k/down" in err.message
    assert len(seen) == 3  # the first part, 3 attempts; nothing after the failure
    assert uploads(raw_s3, bucket) == []  # AbortMultipartUpload went through
    assert keys(raw_s3, bucket) == []
    # Permanent errors are not retried.
    s3b = make_s3()
    hook, seen = fail_with(403, "AccessDenied", times=None)
    s3b.client.meta.events.register("before-send.s3.PutObject", hook)
    with pytest.raises(StorageError) as info:
        await put(s3b, "k/denied", b"x")
    assert not info.value.retryable and len(seen) == 1
    assert "access denied" in info.value.message


async def test_slow_endpoint_does_not_block_the_event_loop(s3: S3Storage) -> None:
    def slow(**_: Any) -> None:
        time.sleep(0.5)

    s3.client.meta.events.register("before-send.s3.UploadPart", slow)
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    try:
        await put(s3, "k/slow", os.urandom(9 * MiB))
    finally:
        tick.cancel()
    assert len(gaps) > 50 and max(gaps) < 0.3, f"the loop stalled {max(gaps):.3f} s"


async def test_wrong_credentials_are_permanent_and_clear(
    s3_endpoint: str, make_s3: Callable[..., S3Storage], bucket: str
) -> None:
    """moto checks signatures once its IAM enforcement is on (/moto-api/reset-auth)."""
    iam_client = raw_client(s3_endpoint, service="iam")
    user = f"oc-{secrets.token_hex(4)}"
    iam_client.create_user(UserName=user)
    iam_client.put_user_policy(
        UserName=user,
        PolicyName="s3",
        PolicyDocument='{"Version":"2012-10-17","Statement":'
        '[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}',
    )
    key = iam_client.create_access_key(UserName=user)["AccessKey"]
    good_id, good_secret = key["AccessKeyId"], key["SecretAccessKey"]
    wrong_secret = "wrong-" + secrets.token_hex(16)
    async with httpx.AsyncClient() as http:
        await http.post(f"{s3_endpoint}/moto-api/reset-auth", content=b"0")
        try:
            ok = make_s3(access_key_id=good_id, secret_access_key=good_secret)
            assert "reachable and writable" in (await ok.check()).message
            await put(ok, "k/authorised", b"ok")

            cases = [
                (good_id, wrong_secret, "check the secret access key"),
                ("AKIAUNKNOWNKEY000000", wrong_secret, "does not accept the access key id"),
            ]
            for key_id, secret, hint in cases:
                bad = make_s3(access_key_id=key_id, secret_access_key=secret)
                attempts: list[Callable[[], Awaitable[Any]]] = [
                    bad.check,
                    lambda: put(bad, "k/denied", b"x"),  # noqa: B023
                    lambda: get(bad, "k/authorised"),  # noqa: B023
                    lambda: bad.stat("k/authorised"),  # noqa: B023
                ]
                for attempt in attempts:
                    with pytest.raises(StorageError) as info:
                        await attempt()
                    err = info.value
                    assert err.code == "io_error" and not err.retryable
                    assert secret not in str(err) and secret not in repr(err.args)
                    assert "access" in err.message or "signature" in err.message
                with pytest.raises(StorageError) as info:
                    await bad.check()
                assert hint in info.value.message
        finally:
            await http.post(f"{s3_endpoint}/moto-api/reset-auth", content=b"inf")


async def test_missing_bucket_is_permanent_and_clear(make_s3: Callable[..., S3Storage]) -> None:
    s3 = make_s3(bucket="no-such-bucket-here")
    with pytest.raises(StorageError) as info:
        await s3.check()
    assert "'no-such-bucket-here'" in info.value.message
    assert "does not exist" in info.value.message and not info.value.retryable
    with pytest.raises(StorageError) as info:
        await put(s3, "k/x", os.urandom(9 * MiB))
    assert "does not exist" in info.value.message and not info.value.retryable
    assert SECRET_ACCESS_KEY not in str(info.value)


@contextlib.contextmanager
def free_port() -> Iterator[int]:
    """A loopback port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_unreachable_endpoint_is_retryable(make_s3: Callable[..., S3Storage]) -> None:
    with free_port() as port:
        s3 = make_s3(endpoint_url=f"http://127.0.0.1:{port}", max_attempts=2)
        with pytest.raises(StorageError) as info:
            await s3.stat("k/x")
    assert info.value.retryable and "cannot connect" in info.value.message


async def test_presigned_url_downloads_with_plain_httpx(s3: S3Storage) -> None:
    data = os.urandom(3 * MiB)
    await put(s3, "dl/backup.tar.zst", data)
    url = await s3.presigned_url("dl/backup.tar.zst", 300)
    assert SECRET_ACCESS_KEY not in url
    async with httpx.AsyncClient() as http:
        r = await http.get(url)
        assert r.status_code == 200 and r.content == data
        url = await s3.presigned_url("dl/backup.tar.zst", 60, download_name="backup.tar.zst")
        r = await http.get(url, headers={"Range": "bytes=0-9"})
        assert r.status_code == 206 and r.content == data[:10]
        assert 'filename="backup.tar.zst"' in r.headers["content-disposition"]
    for expires in (0, 8 * 24 * 3600):
        with pytest.raises(StorageError):
            await s3.presigned_url("dl/backup.tar.zst", expires)
    with pytest.raises(StorageError):
        await s3.presigned_url("dl/backup.tar.zst", download_name='x"; evil=1')


async def test_check_leaves_nothing(s3: S3Storage, raw_s3: Any, bucket: str) -> None:
    result = await s3.check()
    assert result.bucket == bucket and result.seconds > 0
    assert keys(raw_s3, bucket) == []


async def test_cleanup_partials(
    make_s3: Callable[..., S3Storage], raw_s3: Any, bucket: str
) -> None:
    s3 = make_s3(prefix="mine")
    # An upload this process left behind (a crash would leave the same), one started by
    # someone else under our prefix, and one outside it.
    writer = await s3.open_writer("k/left-behind")
    await writer.write(os.urandom(8 * MiB))
    await writer._wait_inflight()  # the first part is up: a real pending upload
    raw_s3.create_multipart_upload(Bucket=bucket, Key="mine/k/other")
    raw_s3.create_multipart_upload(Bucket=bucket, Key="theirs/k/x")
    assert len(uploads(raw_s3, bucket)) == 3
    # moto reports every upload as initiated at 2010-11-10T20:48:33Z: the age threshold
    # is checked against that.
    moto_age = time.time() - datetime(2010, 11, 10, 20, 48, 33, tzinfo=UTC).timestamp()
    assert await s3.cleanup_partials(older_than_seconds=moto_age + 3600) == 0
    assert len(uploads(raw_s3, bucket)) == 3
    assert await s3.cleanup_partials(older_than_seconds=0) == 2
    assert [u["Key"] for u in uploads(raw_s3, bucket)] == ["theirs/k/x"]
    assert await s3.cleanup_partials() == 0
    # The writer whose upload was cleaned up fails clearly at commit, leaving nothing.
    # (Real S3 answers 404 NoSuchUpload; moto answers 500 for an unknown upload id, so
    # the answer S3 would give is injected.)
    hook, _ = fail_with(404, "NoSuchUpload", times=None)
    s3.client.meta.events.register("before-send.s3.CompleteMultipartUpload", hook)
    with pytest.raises(StorageError) as info:
        await writer.commit()
    assert not info.value.retryable
    assert "no longer exists" in info.value.message
    assert keys(raw_s3, bucket) == []


async def test_read_resumes_after_a_broken_stream(
    make_s3: Callable[..., S3Storage], cutting_proxy: CuttingProxy
) -> None:
    direct = make_s3()
    data = os.urandom(12 * MiB)
    await put(direct, "k/long", data)
    s3 = make_s3(endpoint_url=f"http://127.0.0.1:{cutting_proxy.port}")
    reader = await s3.open_reader("k/long", offset=10)
    cutting_proxy.cut(after=3 * MiB)
    out = bytearray()
    async with reader:
        while chunk := await reader.read(256 * 1024):
            out += chunk
    assert cutting_proxy.cuts == 1
    assert hashlib.sha256(out).digest() == hashlib.sha256(data[10:]).digest()


async def test_read_fails_if_the_object_changes_mid_read(
    make_s3: Callable[..., S3Storage], cutting_proxy: CuttingProxy
) -> None:
    direct = make_s3()
    await put(direct, "k/changing", os.urandom(6 * MiB))
    s3 = make_s3(endpoint_url=f"http://127.0.0.1:{cutting_proxy.port}")
    reader = await s3.open_reader("k/changing")
    await put(direct, "k/changing", os.urandom(6 * MiB), overwrite=True)
    cutting_proxy.cut(after=MiB)
    with pytest.raises(StorageError) as info:
        async with reader:
            while await reader.read():
                pass
    assert "changed while it was being read" in info.value.message


# --------------------------------------------------------------------------- pipeline


def _tree(root: Path) -> dict[str, tuple[str, int, bytes | str]]:
    out: dict[str, tuple[str, int, bytes | str]] = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = ("link", stat.S_IMODE(st.st_mode), os.readlink(p))
        elif p.is_dir():
            out[rel] = ("dir", stat.S_IMODE(st.st_mode), "")
        else:
            out[rel] = ("file", stat.S_IMODE(st.st_mode), p.read_bytes())
    return out


async def test_backup_pipeline_into_s3_and_restore(
    make_s3: Callable[..., S3Storage], raw_s3: Any, bucket: str, tmp_path: Path
) -> None:
    s3 = make_s3(prefix="opscenter")
    identity = generate_identity()
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "random.bin").write_bytes(os.urandom(18 * MiB))  # incompressible: multipart
    (src / "notes.txt").write_text("hello ünïcode\n" * 1000)
    (src / "sub" / "run.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    (src / "sub" / "run.sh").chmod(0o750)
    (src / "link").symlink_to("notes.txt")
    result = await run_backup(
        DirectorySource(str(src)),
        s3,
        options=BackupOptions(recipients=(recipient_of(identity),)),
    )
    assert result.manifest_key == f"{result.key}.manifest.json"
    stored = keys(raw_s3, bucket)
    assert sorted(stored) == sorted(f"opscenter/{k}" for k in (result.key, result.manifest_key))
    head = raw_s3.head_object(Bucket=bucket, Key=f"opscenter/{result.key}")
    assert head["ContentLength"] == result.size_bytes > 16 * MiB
    assert head["ETag"].strip('"').endswith("-3")
    assert uploads(raw_s3, bucket) == []

    manifest = await read_manifest(s3, result.key)
    assert manifest.sha256 == result.sha256
    scan = await scan_catalog(s3)
    assert [m.key for m in scan.manifests] == [result.key]
    await quick_verify(s3, manifest)
    out = tmp_path / "out"
    await run_restore(s3, manifest, DirectoryTarget(str(out)), identities=[identity])
    assert _tree(out) == _tree(src)


async def test_sqlite_backup_into_s3_and_restore(s3: S3Storage, tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "app.db"
    con = sqlite3.connect(db)
    con.execute("create table t (id integer primary key, b blob)")
    con.executemany("insert into t (b) values (?)", [(os.urandom(200),) for _ in range(2000)])
    con.commit()
    con.close()
    result = await run_backup(SqliteSource(str(db)), s3)
    manifest = await read_manifest(s3, result.key)
    out = tmp_path / "restored.db"
    await run_restore(s3, manifest, SqliteTarget(str(out)))
    rows = [sqlite3.connect(p).execute("select * from t order by id").fetchall() for p in (db, out)]
    assert rows[0] == rows[1] and len(rows[0]) == 2000


async def test_failed_backup_leaves_nothing_in_s3(
    make_s3: Callable[..., S3Storage], raw_s3: Any, bucket: str, tmp_path: Path
) -> None:
    from opscenter.core.failures import BackupError

    s3 = make_s3(max_attempts=2)
    hook, _seen = fail_with(503, "ServiceUnavailable", times=None)
    s3.client.meta.events.register("before-send.s3.UploadPart", hook)
    src = tmp_path / "src"
    src.mkdir()
    (src / "random.bin").write_bytes(os.urandom(20 * MiB))
    with pytest.raises(BackupError) as info:
        await run_backup(DirectorySource(str(src)), s3)
    assert info.value.code == "storage_failed"
    assert SECRET_ACCESS_KEY not in str(info.value)
    assert keys(raw_s3, bucket) == [] and uploads(raw_s3, bucket) == []


class _Redirecting(http.server.BaseHTTPRequestHandler):
    """An endpoint that answers every request with a 302 elsewhere (a captive portal,
    a load balancer in front of the wrong service, ...)."""

    requests: list[str] = []

    def _redirect(self) -> None:
        type(self).requests.append(f"{self.command} {self.path}")
        self.send_response(302)
        self.send_header("Location", "http://127.0.0.1:9/elsewhere")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _redirect

    def log_message(self, *_: Any) -> None:
        pass


@pytest.mark.parametrize("operation", ["check", "stat"])
async def test_a_redirecting_endpoint_fails_at_once_saying_so(
    make_s3: Callable[..., S3Storage], operation: str
) -> None:
    handler = type("Handler", (_Redirecting,), {"requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        s3 = make_s3(endpoint_url=f"http://127.0.0.1:{server.server_address[1]}")
        with pytest.raises(StorageError) as info:
            await (s3.check() if operation == "check" else s3.stat("k/x"))
    finally:
        server.shutdown()
        server.server_close()
    assert "redirect" in info.value.message and "302" in info.value.message
    assert not info.value.retryable
    assert len(handler.requests) == 1, handler.requests  # not followed, not retried
