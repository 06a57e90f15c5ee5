"""S3-compatible object storage (AWS S3, MinIO, Ceph RGW, Garage, R2, B2, Wasabi, ...).

Same contract as :class:`~opscenter.stores.backends.LocalStorage` (RELIABILITY.md,
"integrity contract", point 2):

* a writer fills one part (8 MiB by default) while at most one other part is being
  uploaded: about two parts in memory. Parts double in size every 1000 parts (capped
  at 512 MiB), so S3's 10,000-part limit allows about 2.5 TiB per object;
* the object becomes visible only on ``CompleteMultipartUpload`` (or on the single
  ``PutObject`` that small objects use at commit); :meth:`abort` and every failure
  call ``AbortMultipartUpload``, so no parts are left behind;
* ``overwrite=False`` is checked when the writer opens and enforced again at commit
  with a conditional write (``If-None-Match: *``) where the endpoint supports it;
* every part carries a ``Content-MD5`` (the endpoint refuses a damaged body), and a
  completion retried after a lost answer is confirmed by the ETag the parts imply;
* transient failures (5xx, throttling, timeouts, connection errors) are retried by
  botocore's ``standard`` retry mode with bounded, jittered exponential backoff; what
  is left is mapped to :class:`StorageError` with ``retryable`` set accordingly and a
  message a person can act on, never containing the secret key.

botocore is synchronous: every call runs in a worker thread (``asyncio.to_thread``),
so the event loop never blocks on the network.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import contextlib
import hashlib
import re
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlsplit

import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    CredentialRetrievalError,
    EndpointConnectionError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ResponseStreamingError,
    SSLError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from opscenter.core.closing import ClosesOnExit
from opscenter.core.logging import get_logger
from opscenter.stores.backends import (
    PARTIAL_SUFFIX,
    AbortsUnlessCommitted,
    ObjectInfo,
    SpaceInfo,
    StorageError,
    _validate_prefix,
    exists_by_stat,
    validate_key,
)

if TYPE_CHECKING:
    from opscenter.stores.backends import StorageBackend, StorageReader, StorageWriter

__all__ = [
    "DEFAULT_PART_SIZE",
    "AddressingStyle",
    "S3CheckResult",
    "S3Storage",
]

MiB = 1 << 20
#: Size of a multipart part until the object is large (see :func:`part_size_for`).
DEFAULT_PART_SIZE = 8 * MiB
MIN_PART_SIZE = 8 * MiB
MAX_PART_SIZE = 512 * MiB
MAX_PARTS = 10_000
#: Part size doubles after every this many parts (8 MiB x 1000 = 8 GiB, then 16 MiB ...).
PARTS_PER_STEP = 1000
MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # SigV4 limit
_READ_CHUNK = 1 << 20
_READ_RESUMES = 3
_PROBE_NAME = ".opscenter-check-"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")
_FILENAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+=@,-]{0,254}$")

AddressingStyle = Literal["auto", "path", "virtual"]

_log = get_logger(__name__)
_T = TypeVar("_T")

_RETRYABLE_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "OperationAborted",
        "BadGateway",
        "GatewayTimeout",
        "XMinioServerNotInitialized",
    }
)
_FULL_CODES = frozenset(
    {"QuotaExceeded", "XMinioStorageFull", "InsufficientStorage", "StorageFull"}
)
# Failures of the response stream after the headers arrived: resume with a new Range GET.
_STREAM_ERRORS = (
    ResponseStreamingError,
    IncompleteReadError,
    HTTPClientError,
    BotoConnectionError,
    OSError,
)


def part_size_for(part_number: int, base: int = DEFAULT_PART_SIZE) -> int:
    """Size of part ``part_number`` (1-based): ``base``, doubling every 1000 parts.

    With 8 MiB parts that is 8 GiB in the first 1000 parts, 24 GiB in 2000, about
    1 TiB in 7000 and 2.5 TiB in 10,000 (parts are capped at 512 MiB).
    """
    step = (part_number - 1) // PARTS_PER_STEP
    return min(base << step, max(base, MAX_PART_SIZE))


def _md5(data: bytes | bytearray) -> bytes:
    return hashlib.md5(data, usedforsecurity=False).digest()


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _multipart_etag(md5s: builtins.list[bytes]) -> str:
    """The ETag S3 gives an unencrypted multipart object: md5 of the part md5s, ``-N``."""
    return f"{hashlib.md5(b''.join(md5s), usedforsecurity=False).hexdigest()}-{len(md5s)}"


def _etag(value: object) -> str:
    return str(value or "").strip('"')


def _status(exc: ClientError) -> int:
    meta = exc.response.get("ResponseMetadata") or {}
    try:
        return int(meta.get("HTTPStatusCode") or 0)
    except (TypeError, ValueError):
        return 0


def _code(exc: ClientError) -> str:
    return str((exc.response.get("Error") or {}).get("Code") or "")


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a background task's exception as retrieved (it is surfaced elsewhere)."""
    if not task.cancelled():
        task.exception()


@dataclass(frozen=True, slots=True)
class S3CheckResult:
    """Outcome of :meth:`S3Storage.check`: the bucket answered and a probe round-tripped."""

    endpoint: str
    bucket: str
    prefix: str
    seconds: float
    message: str


class _S3Writer(AbortsUnlessCommitted):
    """A multipart upload, started lazily when the first part is full.

    At most one part is being uploaded (in a worker thread) while the next one fills;
    ``_lock`` is held by the thread doing S3 calls for this upload, so abort never
    races a part upload (a part that lands after an abort would otherwise be billed
    and kept until the upload is aborted again).
    """

    def __init__(self, storage: S3Storage, key: str, overwrite: bool) -> None:
        self.key = key
        self._storage = storage
        self._s3key = storage.s3_key(key)
        self._overwrite = overwrite
        self._buf = bytearray()  # the part being filled: preallocated, _fill bytes used
        self._fill = 0
        self._written = 0
        self._next_part = 1
        self._upload_id: str | None = None
        self._parts: builtins.list[dict[str, Any]] = []
        self._md5s: builtins.list[bytes] = []
        self._inflight: asyncio.Future[None] | None = None
        self._lock = threading.Lock()
        self._closed = False  # committed or aborted: no more writes
        self._aborted = False  # seen by worker threads under the lock
        self._abort_future: asyncio.Future[None] | None = None
        self._visible = False  # the object was completed/put by this writer

    @property
    def bytes_written(self) -> int:
        return self._written

    @property
    def upload_id(self) -> str | None:
        """The multipart upload id, once one was started (``None`` for small objects)."""
        return self._upload_id

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("closed", f"writer for {self.key!r} is closed")

    # -- worker threads (hold the lock for every S3 call of this upload)

    def _upload_part_sync(self, number: int, holder: builtins.list[bytearray]) -> None:
        # The part comes in a holder emptied here, so its memory is freed as soon as
        # the upload returns (the executor keeps its arguments a little longer).
        body = holder.pop()
        with self._lock:
            if self._aborted:
                raise StorageError("closed", f"writer for {self.key!r} was aborted")
            self._upload_part_locked(number, body)

    def _upload_part_locked(self, number: int, body: bytearray) -> None:
        client = self._storage.client
        if self._upload_id is None:
            resp = client.create_multipart_upload(Bucket=self._storage.bucket, Key=self._s3key)
            self._upload_id = str(resp["UploadId"])
        digest = _md5(body)
        resp = client.upload_part(
            Bucket=self._storage.bucket,
            Key=self._s3key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=body,
            ContentMD5=_b64(digest),
        )
        # The endpoint checked Content-MD5 (BadDigest otherwise). The ETag is not compared
        # with the MD5: with SSE-KMS or SSE-C it is something else.
        self._parts.append({"PartNumber": number, "ETag": resp.get("ETag")})
        self._md5s.append(digest)

    def _commit_sync(self, body: bytearray) -> ObjectInfo:
        s = self._storage
        client = s.client
        with self._lock:
            if self._aborted:
                raise StorageError("closed", f"writer for {self.key!r} was aborted")
            if self._upload_id is None:
                self._put_sync(body)
            else:
                if body:
                    self._upload_part_locked(self._next_part, body)
                    self._next_part += 1
                self._complete_sync()
            self._visible = True
            head = client.head_object(Bucket=s.bucket, Key=self._s3key)
        return ObjectInfo(self.key, int(head["ContentLength"]), head["LastModified"].timestamp())

    def _put_sync(self, body: bytearray) -> None:
        s = self._storage
        kwargs: dict[str, Any] = {
            "Bucket": s.bucket,
            "Key": self._s3key,
            "Body": body,
            "ContentMD5": _b64(_md5(body)),
        }
        if not self._overwrite and s.conditional_writes:
            kwargs["IfNoneMatch"] = "*"
        try:
            s.client.put_object(**kwargs)
        except ClientError as exc:
            if _status(exc) == 412 or _code(exc) == "PreconditionFailed":
                raise StorageError("exists", f"object {self.key!r} already exists") from exc
            raise

    def _complete_sync(self) -> None:
        s = self._storage
        client = s.client
        if not self._overwrite and s.head_sync(self._s3key) is not None:
            raise StorageError("exists", f"object {self.key!r} already exists")
        kwargs: dict[str, Any] = {
            "Bucket": s.bucket,
            "Key": self._s3key,
            "UploadId": self._upload_id,
            "MultipartUpload": {"Parts": self._parts},
        }
        if not self._overwrite and s.conditional_writes:
            kwargs["IfNoneMatch"] = "*"
        try:
            client.complete_multipart_upload(**kwargs)
        except ClientError as exc:
            # A retried completion whose first attempt succeeded answers NoSuchUpload
            # (or 412 with If-None-Match): the object is ours if its ETag is the one
            # our parts imply.
            if _code(exc) not in ("NoSuchUpload", "PreconditionFailed") and _status(exc) != 412:
                raise
            head = s.head_sync(self._s3key)
            if head is None or _etag(head.get("ETag")) != _multipart_etag(self._md5s):
                if _code(exc) == "NoSuchUpload":
                    raise
                raise StorageError("exists", f"object {self.key!r} already exists") from exc
        self._upload_id = None  # completed: nothing left to abort

    def _abort_sync(self) -> None:
        with self._lock:
            if self._visible:
                # The commit completed in its thread but its caller was cancelled (or the
                # final HEAD failed): nobody was told, so the object goes too.
                self._storage.client.delete_object(Bucket=self._storage.bucket, Key=self._s3key)
                self._visible = False
                return
            upload_id, self._upload_id = self._upload_id, None
            if upload_id is None:
                return
            try:
                self._storage.client.abort_multipart_upload(
                    Bucket=self._storage.bucket, Key=self._s3key, UploadId=upload_id
                )
            except ClientError as exc:
                if _code(exc) != "NoSuchUpload":
                    raise

    # -- event loop

    async def _wait_inflight(self) -> None:
        task, self._inflight = self._inflight, None
        if task is not None:
            await task

    async def _fail(self, exc: BaseException, what: str) -> StorageError:
        await self.abort()
        if isinstance(exc, StorageError):
            return exc
        return self._storage.error_from(exc, what)

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        self._check_open()
        view = memoryview(data).cast("B")
        try:
            while view:
                target = part_size_for(self._next_part, self._storage.part_size)
                if not self._buf:
                    # Allocated once per part and filled in place: no reallocation copies.
                    self._buf = bytearray(target)
                n = min(target - self._fill, len(view))
                self._buf[self._fill : self._fill + n] = view[:n]
                self._fill += n
                self._written += n
                view = view[n:]
                if self._fill >= target:
                    await self._send_part()
        except Exception as exc:
            raise await self._fail(exc, f"uploading {self.key!r}") from exc

    def _take_buffer(self) -> bytearray:
        body, self._buf, fill, self._fill = self._buf, bytearray(), self._fill, 0
        del body[fill:]  # in place: only the final part is short
        return body

    async def _send_part(self) -> None:
        await self._wait_inflight()
        if self._next_part > MAX_PARTS:
            raise StorageError("io_error", f"{self.key!r} exceeds {MAX_PARTS} parts")
        holder = [self._take_buffer()]
        number = self._next_part
        self._next_part += 1
        task = asyncio.ensure_future(asyncio.to_thread(self._upload_part_sync, number, holder))
        task.add_done_callback(_retrieve)
        self._inflight = task

    async def commit(self) -> ObjectInfo:
        self._check_open()
        try:
            await self._wait_inflight()
            info = await asyncio.to_thread(self._commit_sync, self._take_buffer())
        except BaseException as exc:
            err = await self._fail(exc, f"committing {self.key!r}")
            if not isinstance(exc, Exception):
                raise
            raise err from exc
        self._closed = True
        return info

    async def abort(self) -> None:
        if self._abort_future is not None:
            # Second call (or a call after commit failed): wait for the first to finish.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._abort_future)
            return
        if self._closed:  # committed
            return
        self._closed = True
        self._aborted = True
        self._buf, self._fill = bytearray(), 0
        # Shielded: the abort completes in its thread even if this task is cancelled again.
        fut = asyncio.ensure_future(asyncio.to_thread(self._abort_sync))
        fut.add_done_callback(_retrieve)
        self._abort_future = fut
        try:
            await asyncio.shield(fut)
        except Exception as exc:  # never mask the error that caused the abort
            _log.warning(
                "s3_abort_failed",
                bucket=self._storage.bucket,
                key=self._s3key,
                error=str(self._storage.error_from(exc, "aborting the upload")),
            )

    @property
    def finished(self) -> bool:
        return self._closed


class _S3Reader(ClosesOnExit):
    """A GetObject body, read in worker threads; resumes with a Range GET pinned to
    the object's ETag (``If-Match``) when the stream breaks mid-way."""

    def __init__(
        self,
        storage: S3Storage,
        key: str,
        body: Any,
        *,
        position: int,
        end: int | None,
        etag: str | None,
    ) -> None:
        self.key = key
        self._storage = storage
        self._body = body
        self._pos = position
        self._end = end  # absolute, exclusive; None = to the end of the object
        self._etag = etag
        self._closed = False

    async def read(self, size: int = _READ_CHUNK) -> bytes:
        if self._closed:
            raise StorageError("closed", f"reader for {self.key!r} is closed")
        if self._end is not None:
            size = min(size, self._end - self._pos)
        if size <= 0 or self._body is None:
            return b""
        attempt = 0
        while True:
            try:
                data = bytes(await asyncio.to_thread(self._body.read, size))
            except _STREAM_ERRORS as exc:
                attempt += 1
                if attempt > _READ_RESUMES:
                    raise self._storage.error_from(exc, f"reading {self.key!r}") from exc
                await self._resume()
                continue
            self._pos += len(data)
            return data

    async def _resume(self) -> None:
        self._close_body()
        rng = f"bytes={self._pos}-" + ("" if self._end is None else str(self._end - 1))
        kwargs: dict[str, Any] = {"Range": rng}
        if self._etag:
            kwargs["IfMatch"] = f'"{self._etag}"'
        try:
            resp = await self._storage.call_raw(
                "get_object",
                Bucket=self._storage.bucket,
                Key=self._storage.s3_key(self.key),
                **kwargs,
            )
        except ClientError as exc:
            if _status(exc) == 412:
                raise StorageError(
                    "io_error", f"{self.key!r} changed while it was being read"
                ) from exc
            raise self._storage.error_from(exc, f"reading {self.key!r}") from exc
        except Exception as exc:
            raise self._storage.error_from(exc, f"reading {self.key!r}") from exc
        self._body = resp["Body"]

    def _close_body(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            with contextlib.suppress(Exception):
                body.close()

    async def close(self) -> None:
        self._closed = True
        self._close_body()


class S3Storage(ClosesOnExit):
    """Objects in ``bucket`` under ``prefix``; key ``a/b`` is the S3 key ``<prefix>a/b``.

    ``access_key_id``/``secret_access_key`` may be omitted to use botocore's default
    credential chain (environment, profile, instance role). Configuration errors
    (bad bucket name, endpoint URL, part size) raise :class:`ValueError`.
    """

    name = "s3"

    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        prefix: str = "",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        addressing_style: AddressingStyle = "auto",
        verify_tls: bool = True,
        part_size: int = DEFAULT_PART_SIZE,
        max_attempts: int = 5,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        conditional_writes: bool = True,
        max_pool_connections: int = 10,
    ) -> None:
        if not _BUCKET.match(bucket) or ".." in bucket:
            raise ValueError(f"invalid bucket name {bucket!r}")
        if endpoint_url is not None:
            parts = urlsplit(endpoint_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("endpoint_url must be an http:// or https:// URL with a host")
            if parts.username or parts.password:
                raise ValueError("endpoint_url must not contain credentials")
        if addressing_style not in ("auto", "path", "virtual"):
            raise ValueError("addressing_style must be 'auto', 'path' or 'virtual'")
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise ValueError(f"part_size must be between {MIN_PART_SIZE} and {MAX_PART_SIZE}")
        if not 1 <= max_attempts <= 10:
            raise ValueError("max_attempts must be between 1 and 10")
        if (access_key_id is None) != (secret_access_key is None):
            raise ValueError("give both access_key_id and secret_access_key, or neither")
        if prefix:
            prefix = prefix.strip("/")
            try:
                validate_key(prefix)
            except StorageError as exc:
                raise ValueError(f"invalid prefix: {exc.message}") from exc
            prefix += "/"
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.region = region
        self.prefix = prefix
        self.addressing_style: AddressingStyle = addressing_style
        self.verify_tls = verify_tls
        self.part_size = part_size
        self.conditional_writes = conditional_writes
        #: Keys per ListObjectsV2 / ListMultipartUploads page (S3's maximum is 1000).
        self.list_page_size = 1000
        self._access_key_id = access_key_id
        self._secret = secret_access_key
        self._session_token = session_token
        self._config = Config(
            region_name=region,
            signature_version="s3v4",
            s3={"addressing_style": addressing_style},
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=max_pool_connections,
            # Flexible checksums (aws-chunked trailers) are not understood by many
            # S3-compatible servers; every body carries a Content-MD5 instead.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._client: Any = None
        self._client_lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"S3Storage(endpoint={self.endpoint_label!r}, bucket={self.bucket!r}, "
            f"prefix={self.prefix!r})"
        )

    @property
    def endpoint_label(self) -> str:
        return self.endpoint_url or f"AWS S3 ({self.region})"

    @property
    def client(self) -> Any:
        """The botocore S3 client, created on first use (blocking: call from a thread)."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    session = botocore.session.get_session()
                    self._client = session.create_client(
                        "s3",
                        region_name=self.region,
                        endpoint_url=self.endpoint_url,
                        verify=self.verify_tls,
                        aws_access_key_id=self._access_key_id,
                        aws_secret_access_key=self._secret,
                        aws_session_token=self._session_token,
                        config=self._config,
                    )
                    # Before botocore's region redirector, which answers a redirect it
                    # cannot place by asking the endpoint again, recursively.
                    self._client.meta.events.register_first("needs-retry.s3", self._refuse_redirect)
        return self._client

    def _refuse_redirect(self, response: Any = None, **_: Any) -> None:
        """A 3xx without the bucket's region (AWS's own region redirect) is not S3
        speaking: fail at once, saying where it pointed."""
        if response is None:
            return
        http = response[0]
        if 300 <= http.status_code < 400 and "x-amz-bucket-region" not in http.headers:
            location = http.headers.get("location", "nowhere")
            raise StorageError(
                "io_error",
                f"{self.endpoint_label} answered HTTP {http.status_code}, a redirect to "
                f"{location}; redirects are not followed: set the endpoint URL to the "
                "address that serves the S3 API itself",
            )

    def s3_key(self, key: str) -> str:
        return self.prefix + validate_key(key)

    async def close(self) -> None:
        """Release pooled connections (the storage can still be used afterwards)."""
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)

    # -- plumbing

    def _scrub(self, text: str) -> str:
        for secret in (self._secret, self._session_token):
            if secret:
                text = text.replace(secret, "[REDACTED]")
        return text

    def error_from(self, exc: BaseException, what: str) -> StorageError:
        """Map a botocore failure to a :class:`StorageError` (secrets scrubbed)."""
        if isinstance(exc, StorageError):
            return exc
        err = self._classify(exc, what)
        err.message = self._scrub(err.message)
        err.args = (err.message,)
        return err

    def _classify(self, exc: BaseException, what: str) -> StorageError:
        where = f"bucket {self.bucket!r} at {self.endpoint_label}"
        if isinstance(exc, ClientError):
            code, status = _code(exc), _status(exc)
            detail = str((exc.response.get("Error") or {}).get("Message") or code or status)
            if code in ("NoSuchKey", "NotFound") or (status == 404 and code in ("", "404")):
                return StorageError("not_found", f"{what}: not found")
            if code == "NoSuchBucket":
                return StorageError(
                    "io_error",
                    f"{what}: {where} does not exist; create it or fix the bucket name "
                    "and endpoint",
                )
            if code == "NoSuchUpload":
                return StorageError(
                    "io_error",
                    f"{what}: the multipart upload no longer exists (aborted by a cleanup "
                    "or a lifecycle rule)",
                )
            if code in (
                "InvalidAccessKeyId",
                "InvalidToken",
                "ExpiredToken",
                "TokenRefreshRequired",
            ):
                return StorageError(
                    "io_error",
                    f"{what}: the endpoint does not accept the access key id for {where}; "
                    "check the access key id (and session token)",
                )
            if code == "SignatureDoesNotMatch":
                return StorageError(
                    "io_error",
                    f"{what}: the signature was refused by {self.endpoint_label}; check the "
                    "secret access key (and the region)",
                )
            if code == "RequestTimeTooSkewed":
                return StorageError(
                    "io_error",
                    f"{what}: this host's clock differs too much from {self.endpoint_label}'s; "
                    "synchronise it (NTP)",
                )
            if code in ("AuthorizationHeaderMalformed", "IllegalLocationConstraintException"):
                return StorageError("io_error", f"{what}: {detail}; check the region of {where}")
            if code in ("AccessDenied", "AllAccessDisabled", "AccountProblem"):
                return StorageError(
                    "io_error",
                    f"{what}: access denied to {where}; allow this key s3:ListBucket, "
                    "s3:GetObject, s3:PutObject, s3:DeleteObject, s3:ListBucketMultipartUploads "
                    "and s3:AbortMultipartUpload on it",
                )
            if status == 403:  # HEAD answers carry no error code
                return StorageError(
                    "io_error",
                    f"{what}: access denied to {where}; check the access key id and secret "
                    "access key, and that this key may read and write the bucket",
                )
            if code == "PermanentRedirect" or status == 301:
                return StorageError(
                    "io_error", f"{what}: {where} is in another region or needs another endpoint"
                )
            if code in ("PreconditionFailed",) or status == 412:
                return StorageError("exists", f"{what}: the object already exists")
            if code in _FULL_CODES or status == 507:
                return StorageError("disk_full", f"{what}: the storage is full ({detail})")
            if code == "NotImplemented" or status == 501:
                return StorageError(
                    "io_error",
                    f"{what}: {self.endpoint_label} does not implement this request ({detail}); "
                    "if it is a conditional write, turn conditional writes off",
                )
            if code in _RETRYABLE_CODES or status in (429, 500, 502, 503, 504) or status >= 500:
                return StorageError(
                    "io_error",
                    f"{what}: {self.endpoint_label} is unavailable or throttling "
                    f"(HTTP {status} {code}) after retries",
                    retryable=True,
                )
            return StorageError("io_error", f"{what}: {code or status}: {detail}")
        if isinstance(exc, SSLError):
            return StorageError(
                "io_error",
                f"{what}: TLS verification of {self.endpoint_label} failed; install a trusted "
                "certificate on the endpoint or turn TLS verification off for this storage",
            )
        if isinstance(exc, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
            return StorageError(
                "io_error", f"{what}: no usable credentials; set the access key id and secret"
            )
        if isinstance(exc, EndpointConnectionError | BotoConnectionError):
            return StorageError(
                "io_error",
                f"{what}: cannot connect to {self.endpoint_label} after retries",
                retryable=True,
            )
        if isinstance(exc, HTTPClientError | ConnectionClosedError | IncompleteReadError):
            return StorageError(
                "io_error",
                f"{what}: the connection to {self.endpoint_label} failed or timed out",
                retryable=True,
            )
        if isinstance(exc, BotoCoreError):
            return StorageError("io_error", f"{what}: {exc}")
        if isinstance(exc, OSError):
            return StorageError("io_error", f"{what}: {exc}", retryable=True)
        return StorageError("io_error", f"{what}: {type(exc).__name__}: {exc}")

    def _invoke(self, op: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = getattr(self.client, op)(**kwargs)
        return result

    async def call_raw(self, op: str, **kwargs: Any) -> dict[str, Any]:
        """Run client method ``op`` in a worker thread; botocore exceptions propagate."""
        return await asyncio.to_thread(self._invoke, op, kwargs)

    async def _call(self, op: str, what: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return await self.call_raw(op, **kwargs)
        except Exception as exc:
            raise self.error_from(exc, what) from exc

    async def _run(self, fn: Callable[[], _T], what: str) -> _T:
        try:
            return await asyncio.to_thread(fn)
        except Exception as exc:
            raise self.error_from(exc, what) from exc

    def head_sync(self, s3key: str) -> dict[str, Any] | None:
        """HeadObject, or ``None`` if absent (blocking)."""
        try:
            result: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=s3key)
        except ClientError as exc:
            if _status(exc) == 404 or _code(exc) in ("NoSuchKey", "NotFound", "404"):
                return None
            raise
        return result

    def _listable(self, s3key: str) -> str | None:
        """Our key for a listed S3 key, or ``None`` for foreign/reserved names."""
        if not s3key.startswith(self.prefix):
            return None
        key = s3key[len(self.prefix) :]
        try:
            validate_key(key)
        except StorageError:
            return None  # "dir/" markers, probe objects, names we never write
        if key.endswith(PARTIAL_SUFFIX):
            return None
        return key

    # -- StorageBackend

    async def open_writer(self, key: str, *, overwrite: bool = False) -> _S3Writer:
        s3key = self.s3_key(key)
        if not overwrite:
            head = await self._run(lambda: self.head_sync(s3key), f"checking {key!r}")
            if head is not None:
                raise StorageError("exists", f"object {key!r} already exists")
        return _S3Writer(self, key, overwrite)

    async def open_reader(
        self, key: str, *, offset: int = 0, length: int | None = None
    ) -> _S3Reader:
        if offset < 0 or (length is not None and length < 0):
            raise StorageError("invalid_range", "offset and length must be >= 0")
        s3key = self.s3_key(key)
        end = None if length is None else offset + length
        if length == 0:
            await self.stat(key)
            return _S3Reader(self, key, None, position=offset, end=end, etag=None)
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": s3key}
        if end is not None:
            kwargs["Range"] = f"bytes={offset}-{end - 1}"
        elif offset:
            kwargs["Range"] = f"bytes={offset}-"
        try:
            resp = await self.call_raw("get_object", **kwargs)
        except ClientError as exc:
            if _status(exc) == 416 or _code(exc) == "InvalidRange":
                # The object exists but is shorter than offset: an empty range, as on disk.
                return _S3Reader(self, key, None, position=offset, end=end, etag=None)
            raise self.error_from(exc, f"opening {key!r}") from exc
        except Exception as exc:
            raise self.error_from(exc, f"opening {key!r}") from exc
        return _S3Reader(
            self, key, resp["Body"], position=offset, end=end, etag=_etag(resp.get("ETag"))
        )

    async def stat(self, key: str) -> ObjectInfo:
        s3key = self.s3_key(key)
        head = await self._run(lambda: self.head_sync(s3key), f"stat {key!r}")
        if head is None:
            raise StorageError("not_found", f"stat {key!r}: not found")
        return ObjectInfo(key, int(head["ContentLength"]), head["LastModified"].timestamp())

    async def exists(self, key: str) -> bool:
        return await exists_by_stat(self, key)

    async def delete(self, key: str) -> None:
        s3key = self.s3_key(key)
        try:
            await self.call_raw("delete_object", Bucket=self.bucket, Key=s3key)
        except ClientError as exc:
            if _code(exc) == "NoSuchKey" or (_status(exc) == 404 and _code(exc) != "NoSuchBucket"):
                return
            raise self.error_from(exc, f"deleting {key!r}") from exc
        except Exception as exc:
            raise self.error_from(exc, f"deleting {key!r}") from exc

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        _validate_prefix(prefix)
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": self.prefix + prefix,
            "MaxKeys": self.list_page_size,
        }
        while True:
            page = await self._call("list_objects_v2", f"listing {prefix!r}", **kwargs)
            for obj in page.get("Contents") or ():
                key = self._listable(str(obj["Key"]))
                if key is not None:
                    yield ObjectInfo(key, int(obj["Size"]), obj["LastModified"].timestamp())
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return
            kwargs["ContinuationToken"] = token

    async def space(self, *, max_objects: int = 100_000) -> SpaceInfo:
        """S3 has no capacity: ``used`` is the sum of listed sizes (``None`` past
        ``max_objects`` objects, to keep the call cheap)."""
        used = 0
        count = 0
        async for info in self.list():
            used += info.size
            count += 1
            if count > max_objects:
                return SpaceInfo(None, None, None)
        return SpaceInfo(None, used, None)

    async def cleanup_partials(self, older_than_seconds: float = 0.0) -> int:
        """Abort multipart uploads under the prefix initiated at least
        ``older_than_seconds`` ago (by the endpoint's clock); return how many."""
        cutoff = time.time() - older_than_seconds
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": self.prefix,
            "MaxUploads": self.list_page_size,
        }
        removed = 0
        while True:
            page = await self._call("list_multipart_uploads", "listing uploads", **kwargs)
            for up in page.get("Uploads") or ():
                if up["Initiated"].timestamp() > cutoff:
                    continue
                try:
                    await self.call_raw(
                        "abort_multipart_upload",
                        Bucket=self.bucket,
                        Key=up["Key"],
                        UploadId=up["UploadId"],
                    )
                except ClientError as exc:
                    if _code(exc) == "NoSuchUpload":
                        continue
                    raise self.error_from(exc, f"aborting upload of {up['Key']!r}") from exc
                except Exception as exc:
                    raise self.error_from(exc, f"aborting upload of {up['Key']!r}") from exc
                removed += 1
            if not page.get("IsTruncated"):
                return removed
            kwargs["KeyMarker"] = page.get("NextKeyMarker") or ""
            kwargs["UploadIdMarker"] = page.get("NextUploadIdMarker") or ""

    # -- extras

    async def signed_url(
        self, key: str, expires_seconds: int, *, download_name: str | None = None
    ) -> str | None:
        return await self.presigned_url(key, expires_seconds, download_name=download_name)

    async def presigned_url(
        self, key: str, expires_seconds: int = 3600, *, download_name: str | None = None
    ) -> str:
        """A time-limited GET URL for ``key`` (no request is made; the object may be absent).

        ``download_name`` sets ``Content-Disposition: attachment; filename=...``.
        """
        if not 1 <= expires_seconds <= MAX_PRESIGN_SECONDS:
            raise StorageError(
                "invalid_key", f"expires_seconds must be between 1 and {MAX_PRESIGN_SECONDS}"
            )
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self.s3_key(key)}
        if download_name is not None:
            if not _FILENAME.match(download_name):
                raise StorageError("invalid_key", f"invalid download name {download_name!r}")
            params["ResponseContentDisposition"] = f'attachment; filename="{download_name}"'

        def _sign() -> str:
            return str(
                self.client.generate_presigned_url(
                    "get_object", Params=params, ExpiresIn=expires_seconds, HttpMethod="GET"
                )
            )

        return await self._run(_sign, f"signing a URL for {key!r}")

    async def check(self) -> S3CheckResult:
        """For "test storage": the bucket answers, and a small probe object can be
        written, read back identically and deleted. Raises :class:`StorageError`."""
        t0 = time.monotonic()
        where = f"bucket {self.bucket!r} at {self.endpoint_label}"
        what = "storage check"
        # ListObjectsV2 rather than HeadBucket: its error answers carry a code, so a wrong
        # secret, an unknown key id and a missing permission are told apart.
        await self._call("list_objects_v2", what, Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
        probe = f"{self.prefix}{_PROBE_NAME}{secrets.token_hex(8)}"
        payload = secrets.token_bytes(64)
        await self._call(
            "put_object",
            f"{what}: writing a probe object",
            Bucket=self.bucket,
            Key=probe,
            Body=payload,
            ContentMD5=_b64(_md5(payload)),
        )
        try:
            resp = await self._call(
                "get_object", f"{what}: reading the probe object", Bucket=self.bucket, Key=probe
            )
            body = resp["Body"]
            try:
                data = await self._run(body.read, f"{what}: reading the probe object")
            finally:
                body.close()
            if data != payload:
                raise StorageError(
                    "io_error", f"{what}: {where} returned other bytes than were written"
                )
        except BaseException:
            with contextlib.suppress(Exception):  # best effort; the first error matters
                await self.call_raw("delete_object", Bucket=self.bucket, Key=probe)
            raise
        await self._call(
            "delete_object", f"{what}: deleting the probe object", Bucket=self.bucket, Key=probe
        )
        seconds = time.monotonic() - t0
        return S3CheckResult(
            endpoint=self.endpoint_label,
            bucket=self.bucket,
            prefix=self.prefix,
            seconds=seconds,
            message=f"{where} is reachable and writable ({seconds * 1000:.0f} ms)",
        )


if TYPE_CHECKING:  # static proof that the S3 backend satisfies the protocols

    def _conforms(s: S3Storage, w: _S3Writer, r: _S3Reader) -> None:
        _b: StorageBackend = s
        _w: StorageWriter = w
        _r: StorageReader = r
