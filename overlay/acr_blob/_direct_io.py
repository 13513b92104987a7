"""A large blob's partial file through ``O_DIRECT``: appended by a thread, or written and read
back in blocks by parallel parts.

On a small machine, a verified download of a multi-gigabyte blob is short of CPU: the hash,
the socket copy and the server all want a core. Buffered writes add two more passes over every
byte (the copy into the page cache, then its writeback), and their dirty pages throttle the
writer. ``O_DIRECT`` hands page-aligned buffers to the disk as they are, so the received bytes
are copied once more at most and never cached (a multi-gigabyte layer does not push everything
else out of the page cache). A thread does the writes, so the disk works while the next
buffer fills and the hash runs.

Only whole 4 KiB blocks at 4 KiB offsets go through ``O_DIRECT``; an unaligned head (a resumed
download) and the tail go through the ordinary descriptor, from the same thread and in order.
Where the filesystem refuses ``O_DIRECT`` (at open or at the first write), the writes are
ordinary ones.

Parallel parts (:class:`BlockFile`, :class:`PartBuffer`) write whole blocks in place the same
way, and the hash reads them back the same way, a read ahead of the hash: through the page cache
every byte would be copied in, copied out again and written back, and on a virtual machine whose
page cache pages are new to it each of those pages costs a fault on the host too.
"""

from __future__ import annotations

import errno
import mmap
import os
import queue
import threading
from collections.abc import Iterator

ALIGNMENT = 4096
BUFFER_SIZE = 4 << 20
BUFFER_COUNT = 3  # one filling, one being written, one spare: 12 MiB in all
# Each part's buffer, written when full (a few per part, so the hash keeps moving), and the
# reads of the hash, two buffers so that the next is read while one is hashed.
PART_BUFFER_SIZE = 2 << 20
READ_BACK_SIZE = 4 << 20


class DirectAppender:
    """Writes the bytes handed to :meth:`write` at ``offset`` onwards of ``fd``'s file.

    ``fd`` is the file's ordinary descriptor; this object opens its own ``O_DIRECT`` one
    through it (``/proc/self/fd``), never by the file's name, which another user may have
    pointed elsewhere in a shared folder. :meth:`close` writes what is still buffered and
    returns the file offset after the last byte; errors of the writing thread are raised by the
    next :meth:`write`, or by :meth:`close`.
    """

    def __init__(self, fd: int, offset: int) -> None:
        self._direct_fd = os.open(
            f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_CLOEXEC | getattr(os, "O_DIRECT", 0)
        )
        self._fd = fd
        self._free: queue.SimpleQueue[mmap.mmap] = queue.SimpleQueue()
        for _ in range(BUFFER_COUNT):
            self._free.put(mmap.mmap(-1, BUFFER_SIZE))  # anonymous maps are page-aligned
        self._full: queue.SimpleQueue[tuple[mmap.mmap, int, int] | None] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._direct = True
        self._buffer = self._free.get()
        self._used = 0
        self._start = offset  # the file offset of the current buffer's first byte
        # A resumed download may start mid-block: fill up to the block's end first.
        self._capacity = (-offset) % ALIGNMENT or BUFFER_SIZE
        self._thread = threading.Thread(target=self._run, name="acr-blob-writer", daemon=True)
        self._thread.start()

    def lend(self, limit: int) -> memoryview:
        """The free part of the current buffer, at most ``limit`` bytes, to receive into.

        A following :meth:`write` of a prefix of that view takes the bytes where they are.
        """
        if self._error is not None:
            raise self._error
        return memoryview(self._buffer)[self._used : min(self._capacity, self._used + limit)]

    def may_wait(self, count: int) -> bool:
        """Whether a :meth:`write` of ``count`` bytes may wait for a buffer to come free."""
        if self._used + count < self._capacity:
            return False
        return self._free.qsize() < 1 + (self._used + count - self._capacity) // BUFFER_SIZE

    def write(self, data: bytes | memoryview) -> None:
        """Copy ``data`` into the buffers; full buffers go to the writing thread."""
        if isinstance(data, memoryview) and data.obj is self._buffer:
            # Received into what lend() handed out, which starts at self._used.
            self._used += len(data)
            if self._used == self._capacity:
                self._submit()
            return
        view = memoryview(data)
        while view:
            count = min(len(view), self._capacity - self._used)
            self._buffer[self._used : self._used + count] = view[:count]
            self._used += count
            view = view[count:]
            if self._used == self._capacity:
                self._submit()

    def close(self) -> int:
        """Write what is left, wait for the writes, and return the offset after the last byte."""
        try:
            if self._used and self._error is None:
                self._submit()
        finally:
            self._full.put(None)
            self._thread.join()
            os.close(self._direct_fd)
        if self._error is not None:
            raise self._error
        return self._start

    def _submit(self) -> None:
        if self._error is not None:
            raise self._error
        self._full.put((self._buffer, self._used, self._start))
        self._start += self._used
        self._used = 0
        self._capacity = BUFFER_SIZE
        self._buffer = self._free.get()

    def _run(self) -> None:
        while (item := self._full.get()) is not None:
            buffer, length, offset = item
            if self._error is None:
                try:
                    self._write(memoryview(buffer)[:length], offset)
                except BaseException as error:  # handed to the caller's thread
                    self._error = error
            self._free.put(buffer)

    def _write(self, data: memoryview, offset: int) -> None:
        # A buffer at an unaligned offset is the head alone (see _capacity): written plainly.
        self._direct = _write_blocks(self._fd, self._direct_fd, data, offset, self._direct)


class BlockFile:
    """``fd``'s file at any offsets, its whole blocks through ``O_DIRECT`` (safe from several
    threads): parallel parts write into it with :meth:`write_at`, the hash reads it back with
    :meth:`read_back`.

    Like :class:`DirectAppender`, it opens its own ``O_DIRECT`` descriptor through ``fd``; a
    filesystem that refuses ``O_DIRECT`` at the first write or read gets ordinary ones from then
    on. Unaligned heads and tails go through ``fd``: the kernel writes cached pages back before
    a direct read of their blocks, so what reads back is what was written either way.
    """

    def __init__(self, fd: int) -> None:
        self._direct_fd = os.open(
            f"/proc/self/fd/{fd}", os.O_RDWR | os.O_CLOEXEC | getattr(os, "O_DIRECT", 0)
        )
        self._fd = fd
        self._direct_writes = self._direct_reads = True
        self._reads = [mmap.mmap(-1, READ_BACK_SIZE) for _ in range(2)]
        # The reading thread takes (buffer, offset) and answers, in order, a count or an error.
        self._wanted: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
        self._answers: queue.SimpleQueue[int | OSError] = queue.SimpleQueue()
        self._reader = threading.Thread(target=self._run, name="acr-blob-read-back", daemon=True)
        self._reader.start()

    def write_at(self, data: memoryview, offset: int) -> None:
        """Write ``data`` at ``offset``: a view whose address is ``offset`` modulo
        :data:`ALIGNMENT` past a page's start (as :class:`PartBuffer` lays its bytes out)."""
        self._direct_writes = _write_blocks(
            self._fd, self._direct_fd, data, offset, self._direct_writes
        )

    def read_back(self, offset: int, end: int) -> Iterator[memoryview]:
        """Bytes ``offset`` to ``end - 1``, in views valid until the next one is taken."""
        start = offset - offset % ALIGNMENT
        which = 0
        self._wanted.put((which, start))
        asked = 1
        try:
            while offset < end:
                answer = self._answers.get()
                asked -= 1
                if isinstance(answer, OSError):
                    raise answer
                count = answer
                if count <= offset - start:
                    raise EOFError(f"the file ended at byte {offset}")
                following = start + count
                if following < end:
                    self._wanted.put((1 - which, following))
                    asked += 1
                view = memoryview(self._reads[which])[offset - start : min(count, end - start)]
                offset += len(view)
                yield view
                start, which = following, 1 - which
        finally:
            for _ in range(asked):  # a read still under way must not answer the next call
                self._answers.get()

    def close(self) -> None:
        self._wanted.put(None)
        self._reader.join()
        os.close(self._direct_fd)

    def _run(self) -> None:
        while (wanted := self._wanted.get()) is not None:
            try:
                self._answers.put(self._read(*wanted))
            except OSError as error:  # raised in the caller's thread
                self._answers.put(error)

    def _read(self, which: int, offset: int) -> int:
        buffer = self._reads[which]
        if self._direct_reads:
            try:
                return os.preadv(self._direct_fd, [buffer], offset)
            except OSError as error:
                if error.errno != errno.EINVAL:
                    raise
                self._direct_reads = False
        return os.preadv(self._fd, [buffer], offset)


def open_block_file(fd: int) -> BlockFile | None:
    """A :class:`BlockFile`, or ``None`` where ``O_DIRECT`` cannot be opened here."""
    if not hasattr(os, "O_DIRECT"):
        return None
    try:
        return BlockFile(fd)
    except OSError:
        return None


class PartBuffer:
    """The bytes of one part on their way to the file: received into :meth:`lend`'s views, or
    copied in by :meth:`write`, laid out for :meth:`BlockFile.write_at`; :attr:`pending` is
    what to write at :attr:`offset` (then :meth:`written`). A full buffer ends on a block's
    end, so that only a part's first and last blocks are written the ordinary way."""

    def __init__(self, offset: int, size: int = PART_BUFFER_SIZE) -> None:
        assert size % ALIGNMENT == 0
        self._buffer = mmap.mmap(-1, size)  # anonymous maps are page-aligned
        self._size = size
        self.restart(offset)

    def restart(self, offset: int) -> None:
        """Empty the buffer, for the bytes from ``offset`` on (the next part's)."""
        self.offset = offset
        self._head = self._used = offset % ALIGNMENT

    @property
    def full(self) -> bool:
        return self._used == self._size

    @property
    def pending(self) -> memoryview:
        return memoryview(self._buffer)[self._head : self._used]

    def lend(self, limit: int) -> memoryview:
        """The free part of the buffer, at most ``limit`` bytes; never empty but when full."""
        return memoryview(self._buffer)[self._used : min(self._size, self._used + limit)]

    def write(self, data: bytes | memoryview) -> memoryview:
        """Take ``data``; return what did not fit (the buffer is then full)."""
        view = memoryview(data)
        if isinstance(data, memoryview) and data.obj is self._buffer:
            self._used += len(view)  # received into what lend() handed out
            return view[len(view) :]
        count = min(len(view), self._size - self._used)
        self._buffer[self._used : self._used + count] = view[:count]
        self._used += count
        return view[count:]

    def written(self) -> None:
        """The pending bytes are in the file: the buffer is empty, for the bytes after them."""
        self.restart(self.offset + self._used - self._head)


def open_direct_appender(fd: int, offset: int) -> DirectAppender | None:
    """A :class:`DirectAppender`, or ``None`` where ``O_DIRECT`` cannot be opened here."""
    if not hasattr(os, "O_DIRECT"):
        return None
    try:
        return DirectAppender(fd, offset)
    except OSError:
        return None


def _write_blocks(fd: int, direct_fd: int, data: memoryview, offset: int, direct: bool) -> bool:
    """Write ``data`` at ``offset``: its whole blocks through ``direct_fd`` while ``direct``, the
    rest (an unaligned head, the tail, all of it once the filesystem refused ``O_DIRECT``)
    through ``fd``. ``data``'s address is ``offset`` modulo :data:`ALIGNMENT` past a page's
    start. Returns whether ``O_DIRECT`` is still to be used."""
    head = min(len(data), (-offset) % ALIGNMENT)
    if head:
        _pwrite_all(fd, data[:head], offset)
        data, offset = data[head:], offset + head
    blocks = len(data) - len(data) % ALIGNMENT
    if blocks and direct:
        try:
            written = os.pwrite(direct_fd, data[:blocks], offset)
        except OSError as error:
            if error.errno != errno.EINVAL:  # this filesystem wants no O_DIRECT after all
                raise
            direct = False
        else:
            data, offset = data[written:], offset + written
    _pwrite_all(fd, data, offset)
    return direct


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written
