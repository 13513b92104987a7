"""Large downloads to a file: O_DIRECT appends from a writing thread, and bytes received straight
into the appender's buffers. Unit tests for the appender; the real registry (plain and TLS) for
the whole path; faults injected where no real server or filesystem produces them."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from acr_blob import (
    AsyncBlobClient,
    BlobClient,
    RetryPolicy,
    TransportError,
    _direct_io,
    _fast_read,
)
from acr_blob._direct_io import ALIGNMENT, BUFFER_SIZE, DirectAppender, open_direct_appender
from acr_blob._fast_read import READ_SIZE, _own_socket, _receive_into, _TakenSocket
from acr_blob._files import _DIRECT_MIN_SIZE, PartialFile
from acr_blob.references import parse_digest
from tests.conftest import skip_or_fail
from tests.drivers import Driver
from tools.testbed import Deployment, make_tls_cert

SIZE = _DIRECT_MIN_SIZE + 3 * BUFFER_SIZE + 12345  # large enough, and ends mid-block


@pytest.fixture(scope="module")
def large(registry: Deployment) -> tuple[str, bytes]:
    pushed = registry.push_random("direct/large", SIZE)
    return pushed.digest, pushed.data


@pytest.fixture(scope="module")
def tls_large(tls_registry: Deployment) -> tuple[str, bytes]:
    pushed = tls_registry.push_random("direct/large", SIZE)
    return pushed.digest, pushed.data


def _pieces(data: bytes, sizes: Iterator[int]) -> Iterator[bytes]:
    position = 0
    while position < len(data):
        size = next(sizes)
        yield data[position : position + size]
        position += size


def _irregular() -> Iterator[int]:
    while True:
        yield from (1, 4095, 70_000, BUFFER_SIZE, 3, BUFFER_SIZE + 1, 1 << 20)


@pytest.fixture
def o_direct_here(tmp_path: Path) -> None:
    """The test's tmp_path takes O_DIRECT (the CI machine's must)."""
    if not _direct_supported(tmp_path):
        skip_or_fail("the temporary folder's filesystem refuses O_DIRECT")


def _direct_supported(folder: Path) -> bool:
    probe = folder / "probe"
    probe.touch()
    fd = os.open(probe, os.O_RDWR)
    try:
        appender = open_direct_appender(fd, 0)
        if appender is not None:
            appender.close()
        return appender is not None
    finally:
        os.close(fd)
        probe.unlink()


@pytest.mark.usefixtures("o_direct_here")
@pytest.mark.parametrize("offset", [0, 1, ALIGNMENT - 1, ALIGNMENT, 5000])
@pytest.mark.parametrize("length", [0, 1, ALIGNMENT, BUFFER_SIZE, 2 * BUFFER_SIZE + 17])
@pytest.mark.parametrize("lend", [False, True], ids=["copied", "lent"])
def test_appender_writes_every_byte_in_place(
    tmp_path: Path, offset: int, length: int, lend: bool
) -> None:
    path = tmp_path / "file"
    head = os.urandom(offset)
    data = os.urandom(length)
    path.write_bytes(head)
    fd = os.open(path, os.O_RDWR)
    try:
        appender = DirectAppender(fd, offset)
        for piece in _pieces(data, _irregular()):
            if lend:
                # Receive the piece in as many views as it takes, as a socket would.
                while piece:
                    view = appender.lend(len(piece))
                    assert 0 < len(view) <= len(piece)
                    view[:] = piece[: len(view)]
                    piece = piece[len(view) :]
                    appender.write(view)
            else:
                appender.write(piece)
        assert appender.close() == offset + length
    finally:
        os.close(fd)
    assert path.read_bytes() == head + data


@pytest.mark.usefixtures("o_direct_here")
def test_a_lent_buffer_is_never_larger_than_one_buffer(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.touch()
    fd = os.open(path, os.O_RDWR)
    try:
        appender = DirectAppender(fd, 100)
        # A resumed download first fills up to the block boundary.
        assert len(appender.lend(1 << 30)) == ALIGNMENT - 100
        appender.write(b"x" * (ALIGNMENT - 100))
        assert len(appender.lend(1 << 30)) == BUFFER_SIZE
        assert len(appender.lend(10)) == 10
        appender.close()
    finally:
        os.close(fd)


def test_o_direct_refused_at_open_means_ordinary_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def refuse_direct(path: object, flags: int, *args: object) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(_direct_io.os, "open", refuse_direct)
    data = os.urandom(_DIRECT_MIN_SIZE + 5)
    digest = parse_digest("sha256:" + hashlib.sha256(data).hexdigest())
    with PartialFile(tmp_path / "blob", digest) as partial:
        with partial.appending(len(data)) as appender:
            assert appender.lend is None
            appender.write(data)
        partial.commit()
    assert (tmp_path / "blob").read_bytes() == data


@pytest.mark.usefixtures("o_direct_here")
def test_o_direct_refused_at_the_first_write_means_ordinary_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused: list[int] = []
    real_pwrite = os.pwrite

    def refuse_direct(fd: int, data: memoryview, offset: int) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(_direct_io.os, "pwrite", refuse_direct)
    path = tmp_path / "file"
    path.touch()
    data = os.urandom(3 * BUFFER_SIZE + 1)
    fd = os.open(path, os.O_RDWR)
    try:
        appender = DirectAppender(fd, 0)
        appender.write(data)
        appender.close()
    finally:
        os.close(fd)
    assert refused == [0], "after the first refusal, every write is an ordinary one"
    assert path.read_bytes() == data


@pytest.mark.usefixtures("o_direct_here")
def test_a_failing_disk_is_raised_and_leaves_nothing_behind(
    mode: str,
    registry: Deployment,
    large: tuple[str, bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    digest, _ = large

    def disk_full(fd: int, data: memoryview, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_direct_io.os, "pwrite", disk_full)
    sent: list[httpx.Request] = []
    with pytest.raises(OSError) as caught:
        Driver(mode, registry.url, record=sent).to_file("direct/large", digest, tmp_path / "blob")
    assert caught.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []
    # A disk error is not the network's: nothing is resumed.
    assert len(sent) == 1
    assert not [t for t in threading.enumerate() if t.name == "acr-blob-writer"]


class Spy:
    """Counts the bytes each DirectAppender took in place (lent) and by copy."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.lent = 0
        self.copied = 0
        self.appenders = 0
        real_init, real_write = DirectAppender.__init__, DirectAppender.write
        spy = self

        def init(appender: DirectAppender, *args: object) -> None:
            spy.appenders += 1
            real_init(appender, *args)  # type: ignore[arg-type]

        def write(appender: DirectAppender, data: bytes | memoryview) -> None:
            if isinstance(data, memoryview) and data.obj is appender._buffer:
                spy.lent += len(data)
            else:
                spy.copied += len(data)
            real_write(appender, data)

        monkeypatch.setattr(DirectAppender, "__init__", init)
        monkeypatch.setattr(DirectAppender, "write", write)


@pytest.mark.usefixtures("o_direct_here")
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_download_receives_straight_into_the_appenders_buffers(
    mode: str,
    scheme: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deployment: Deployment = request.getfixturevalue(
        "tls_registry" if scheme == "https" else "registry"
    )
    digest, data = request.getfixturevalue("tls_large" if scheme == "https" else "large")
    spy = Spy(monkeypatch)
    client = Driver(mode, deployment.url, verify=deployment.verify, allow_insecure=True)
    client.to_file("direct/large", digest, tmp_path / "blob")
    assert (tmp_path / "blob").read_bytes() == data
    assert spy.appenders == 1
    # Only what was read with the headers is copied: what h11 had buffered and, for async,
    # what anyio had queued or decrypted before the socket was taken (_fast_read._TakenSocket).
    assert spy.copied < 1 << 20
    assert spy.lent + spy.copied == SIZE


def test_a_small_blob_is_written_the_ordinary_way(
    mode: str, registry: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pushed = registry.push_random("direct/small", _DIRECT_MIN_SIZE - 1)
    spy = Spy(monkeypatch)
    Driver(mode, registry.url).to_file("direct/small", pushed.digest, tmp_path / "blob")
    assert (tmp_path / "blob").read_bytes() == pushed.data
    assert spy.appenders == 0


def test_sync_iteration_hands_over_large_reads(
    registry: Deployment, large: tuple[str, bytes]
) -> None:
    digest, data = large
    sizes: list[int] = []
    with BlobClient(registry.url) as client, client.download_blob("direct/large", digest) as blob:
        chunks = list(blob)
    sizes.extend(len(chunk) for chunk in chunks)
    received = b"".join(chunks)
    assert received == data
    _check_read_sizes(sizes)


def test_async_iteration_hands_over_reads_larger_than_asyncios_default(
    registry: Deployment, large: tuple[str, bytes]
) -> None:
    # asyncio's transports read 256 KiB at a time; the taken socket reads up to READ_SIZE.
    digest, data = large
    sizes: list[int] = []

    async def download() -> bytes:
        async with (
            AsyncBlobClient(registry.url) as client,
            await client.download_blob("direct/large", digest) as blob,
        ):
            chunks = [chunk async for chunk in blob]
        sizes.extend(len(chunk) for chunk in chunks)
        return b"".join(chunks)

    assert asyncio.run(download()) == data
    _check_read_sizes(sizes)


TLS_RECORD = 16 * 1024


def test_iteration_over_tls_gathers_the_records_at_hand(
    mode: str, tls_registry: Deployment, tls_large: tuple[str, bytes]
) -> None:
    # A TLS read gives one record; handing each out on its own was 2.5x slower, sync or async.
    digest, data = tls_large

    async def chunks_async() -> list[bytes]:
        async with (
            AsyncBlobClient(tls_registry.url, verify=tls_registry.verify) as client,
            await client.download_blob("direct/large", digest) as blob,
        ):
            return [chunk async for chunk in blob]

    if mode == "sync":
        with (
            BlobClient(tls_registry.url, verify=tls_registry.verify) as client,
            client.download_blob("direct/large", digest) as blob,
        ):
            chunks = list(blob)
    else:
        chunks = asyncio.run(chunks_async())
    assert b"".join(chunks) == data
    sizes = [len(chunk) for chunk in chunks]
    assert max(sizes) <= READ_SIZE
    gathered = sum(size for size in sizes if size > TLS_RECORD)
    assert gathered > SIZE // 2, f"mostly single records: {sorted(sizes)[-10:]}"


def test_an_async_tls_body_is_decrypted_from_the_socket_where_anyio_left_off(
    tls_registry: Deployment, tls_large: tuple[str, bytes]
) -> None:
    digest, data = tls_large

    async def check() -> None:
        async with (
            httpx.AsyncClient(verify=tls_registry.verify) as client,
            client.stream("GET", tls_registry.blob_url("direct/large", digest)) as response,
        ):
            stream = response.extensions["network_stream"]
            taken = _TakenSocket.of(stream)
            assert taken is not None
            body = bytearray(await anext(response.aiter_raw()))
            while not taken.ready():  # what anyio has queued or decrypted already
                body += await stream.read(READ_SIZE)
            view = memoryview(bytearray(READ_SIZE))
            try:
                while len(body) < SIZE:
                    body += view[: await taken.recv_into(view, 5)]
                assert body == data
                # The whole body is in; the server keeps the connection open and says nothing:
                # the read waits for the timeout, and no longer.
                started = time.monotonic()
                with pytest.raises(TimeoutError):
                    await taken.recv_into(view, 0.2)
                assert time.monotonic() - started < 2
            finally:
                taken.close()

    asyncio.run(check())


class _CuttingTLSServer:
    """Answers one https request with a large body and hangs up halfway, without TLS's
    close_notify: a cut no real registry makes on purpose, so a server of our own."""

    def __init__(self, directory: Path, body: bytes, cut_at: int) -> None:
        cert, key = make_tls_cert(directory)
        self.ca_cert = cert
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(cert, key)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self._listener.getsockname()[1]}"
        self._answer = (
            f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode() + body[:cut_at]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            plain, _ = self._listener.accept()
            with self._context.wrap_socket(plain, server_side=True) as conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(65536)
                conn.sendall(self._answer)
                # Hang up under TLS: the TCP connection ends with no close_notify.
                conn.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._listener.close()
        self._thread.join(10)


def test_a_tls_body_cut_halfway_is_a_transport_error_and_leaves_no_file(
    mode: str, tmp_path: Path
) -> None:
    body = os.urandom(SIZE)
    digest = f"sha256:{hashlib.sha256(body).hexdigest()}"
    server = _CuttingTLSServer(tmp_path, body, SIZE // 2)
    try:
        client = Driver(
            mode,
            server.url,
            verify=ssl.create_default_context(cafile=str(server.ca_cert)),
            retry=RetryPolicy.never(),
            timeout=httpx.Timeout(5),
        )
        target = tmp_path / "out" / "blob"
        target.parent.mkdir()
        with pytest.raises(TransportError) as caught:
            client.to_file("direct/large", digest, target)
    finally:
        server.close()
    assert not target.exists()
    # The body had begun (the handshake held); what came before the cut is kept for a resume.
    (partial,) = target.parent.iterdir()
    assert partial.name.endswith(".partial")
    assert 0 < partial.stat().st_size <= SIZE // 2
    assert partial.read_bytes() == body[: partial.stat().st_size]
    # Every byte sent before the cut was received, none after.
    assert f"after {SIZE // 2} of {SIZE} bytes" in str(caught.value)


@pytest.fixture
def tls_pair(tmp_path: Path) -> Iterator[tuple[ssl.SSLSocket, ssl.SSLSocket]]:
    """A connected client and server TLS socket, the handshake done."""
    cert, key = make_tls_cert(tmp_path)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(cert))
    ours, theirs = socket.socketpair()
    accepted: list[ssl.SSLSocket] = []
    handshake = threading.Thread(
        target=lambda: accepted.append(server_context.wrap_socket(theirs, server_side=True))
    )
    handshake.start()
    client = client_context.wrap_socket(ours, server_hostname="127.0.0.1")
    handshake.join(10)
    (server,) = accepted
    with client, server:
        yield client, server


def test_a_tls_receive_takes_every_record_at_hand_and_waits_only_for_the_first(
    tls_pair: tuple[ssl.SSLSocket, ssl.SSLSocket],
) -> None:
    client, server = tls_pair
    sent = os.urandom(5 * TLS_RECORD + 123)
    server.sendall(sent)  # several records, all in the client's socket buffer by now
    view = memoryview(bytearray(1 << 20))
    count = _receive_into(client, view, 5)
    assert bytes(view[:count]) == sent
    assert client.gettimeout() == 5
    # Nothing at hand: the first read waits for the timeout, and no longer.
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        _receive_into(client, view, 0.2)
    assert time.monotonic() - started < 2
    assert client.gettimeout() == 0.2
    # What gathering adds: a plain read of the TLS socket gives one record.
    server.sendall(sent)
    client.settimeout(5)
    assert client.recv_into(view) <= TLS_RECORD


def _check_read_sizes(sizes: list[int]) -> None:
    assert max(sizes) <= READ_SIZE
    in_large_reads = sum(size for size in sizes if size > 256 * 1024)
    assert in_large_reads > SIZE // 2, f"mostly small reads: {sorted(sizes)[-10:]}"


class _FakeStream:
    """Answers get_extra_info as httpcore's network streams do."""

    def __init__(self, sock: object, ssl_object: object) -> None:
        self.info = {"socket": sock, "ssl_object": ssl_object}

    def get_extra_info(self, name: str) -> object:
        return self.info.get(name)


def test_only_a_socket_that_gives_the_body_itself_is_read_directly() -> None:
    context = ssl.create_default_context()
    with (
        socket.socket() as plain,
        context.wrap_socket(
            socket.socket(), server_hostname="registry.example", do_handshake_on_connect=False
        ) as tls,
    ):
        tunnelled = context.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO())
        # Plain TCP, and TLS done by the socket itself: read directly.
        assert _own_socket(_FakeStream(plain, None)) is plain
        assert _own_socket(_FakeStream(tls, None)) is tls
        # TLS inside an HTTPS proxy's tunnel: the socket carries the outer layer only.
        assert _own_socket(_FakeStream(tls, tunnelled)) is None
        assert _own_socket(_FakeStream(plain, tunnelled)) is None
        # The async backends hand out transport sockets, which are not theirs to read.
        assert _own_socket(_FakeStream(object(), None)) is None


class _QueueProtocol(asyncio.Protocol):
    """Has what anyio's StreamProtocol has that _TakenSocket looks at: a read_event."""

    def __init__(self) -> None:
        self.read_event = asyncio.Event()


class _Wrapped:
    """httpcore's AnyIOStream over anyio's SocketStream: ``_stream._transport``."""

    def __init__(self, transport: object) -> None:
        self._stream = type("SocketStream", (), {"_transport": transport})()


def test_the_async_socket_is_taken_only_when_nothing_else_reads_it() -> None:
    async def check() -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        with theirs:
            transport, protocol = await loop.create_connection(_QueueProtocol, sock=ours)
            try:
                # Streams without those private attributes keep the ordinary reads.
                assert _TakenSocket.of(object()) is None
                assert _TakenSocket.of(_Wrapped(object())) is None
                taken = _TakenSocket.of(_Wrapped(transport))
                assert taken is not None
                # Not while the transport reads, nor while anyio holds bytes not handed out.
                assert not taken.ready()
                transport.pause_reading()
                protocol.read_event.set()
                assert not taken.ready()
                protocol.read_event.clear()
                assert taken.ready()
                theirs.sendall(b"body bytes")
                view = memoryview(bytearray(64))
                count = await taken.recv_into(view, 5)
                assert bytes(view[:count]) == b"body bytes"
                with pytest.raises(TimeoutError):
                    await taken.recv(64, 0.05)
                taken.close()
            finally:
                transport.close()

        # Out of descriptors for the duplicate: anyio's reads go on.
        ours, theirs = socket.socketpair()
        with theirs, pytest.MonkeyPatch.context() as patch:
            transport, _ = await loop.create_connection(_QueueProtocol, sock=ours)
            try:
                transport.pause_reading()
                taken = _TakenSocket.of(_Wrapped(transport))
                assert taken is not None

                def no_descriptors(fd: int) -> int:
                    raise OSError(errno.EMFILE, "Too many open files")

                patch.setattr(os, "dup", no_descriptors)
                assert not taken.ready()
                patch.undo()
                assert not taken.ready(), "once refused, the ordinary reads for the whole body"
            finally:
                transport.close()

        # A transport of asyncio's base class only, or a protocol that is not anyio's (no
        # read_event): ordinary reads.
        assert _TakenSocket.of(_Wrapped(asyncio.Transport())) is None
        # TLS inside a proxy's TLS tunnel: what carries the inner TLS is no socket's transport.
        context = ssl.create_default_context()
        tunnelled = type(
            "TLSStream",
            (),
            {
                "_ssl_object": context.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO()),
                "_read_bio": ssl.MemoryBIO(),
                "_write_bio": ssl.MemoryBIO(),
                "transport_stream": type("TLSStream", (), {})(),
            },
        )()
        assert _TakenSocket.of(type("AnyIOStream", (), {"_stream": tunnelled})()) is None
        ours, theirs = socket.socketpair()
        with theirs:
            transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
            try:
                assert _TakenSocket.of(_Wrapped(transport)) is None
            finally:
                transport.close()

    asyncio.run(check())


@pytest.mark.parametrize("action", ["iterate", "to_file"])
def test_the_switch_turns_the_fast_read_off(
    mode: str,
    action: str,
    registry: Deployment,
    large: tuple[str, bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    digest, data = large
    readers: list[object] = []
    for reader in (_fast_read.FastReader, _fast_read.AsyncFastReader):
        real = reader.read

        def read(self: Any, remaining: int, real: Any = real) -> Any:
            readers.append(self)
            return real(self, remaining)

        monkeypatch.setattr(reader, "read", read)

    def download() -> bytes:
        driver = Driver(mode, registry.url)
        if action == "iterate":
            return driver.iterate("direct/large", digest)
        target = tmp_path / f"blob-{len(readers)}"
        driver.to_file("direct/large", digest, target)
        received = target.read_bytes()
        target.unlink()
        return received

    monkeypatch.setenv(_fast_read.SWITCH, "0")
    assert download() == data
    assert readers == [], "ACR_BLOB_FAST_READ=0 still read beneath httpx"
    monkeypatch.delenv(_fast_read.SWITCH)
    assert download() == data
    assert readers, "the fast read did not engage"
