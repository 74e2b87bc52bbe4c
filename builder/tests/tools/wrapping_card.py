#!/usr/bin/python3
"""A counterfeit SD card as a FUSE file, for the fake-capacity test of `piforge flash`.

Mounts MOUNTPOINT with one file, `card`, that claims CLAIMED bytes but stores only REAL
bytes: every read and write at offset o goes to o % REAL, the way a counterfeit card's
controller drops the high address bits. `losetup` over it gives a block device that really
wraps (for kernels without device-mapper). Opened with direct_io so no page cache hides the
aliasing. Runs in the foreground until unmounted.
    wrapping_card.py MOUNTPOINT REAL CLAIMED
"""
import errno
import stat
import sys
import threading
import time

from fusepy import FUSE, FuseOSError, Operations


class Card(Operations):
    def __init__(self, real, claimed):
        self.data = bytearray(real)
        self.claimed = claimed
        self.mutex = threading.Lock()

    def getattr(self, path, fh=None):
        now = time.time()
        if path == "/":
            return dict(st_mode=stat.S_IFDIR | 0o755, st_nlink=2,
                        st_ctime=now, st_mtime=now, st_atime=now)
        if path == "/card":
            return dict(st_mode=stat.S_IFREG | 0o600, st_nlink=1, st_size=self.claimed,
                        st_ctime=now, st_mtime=now, st_atime=now)
        raise FuseOSError(errno.ENOENT)

    def readdir(self, path, fh):
        return [".", "..", "card"]

    def open(self, path, fi):
        if path != "/card":
            raise FuseOSError(errno.ENOENT)
        fi.direct_io = True
        return 0

    def _span(self, size, offset):
        size = max(0, min(size, self.claimed - offset))
        real = len(self.data)
        pos, end = offset, offset + size
        while pos < end:
            at = pos % real
            n = min(end - pos, real - at)
            yield pos - offset, at, n
            pos += n

    def read(self, path, size, offset, fi):
        with self.mutex:
            out = bytearray()
            for _, at, n in self._span(size, offset):
                out += self.data[at:at + n]
            return bytes(out)

    def write(self, path, buf, offset, fi):
        with self.mutex:
            for i, at, n in self._span(len(buf), offset):
                self.data[at:at + n] = buf[i:i + n]
            return len(buf)

    def truncate(self, path, length, fh=None):
        return 0

    def fsync(self, path, datasync, fi):
        return 0

    def flush(self, path, fi):
        return 0


if __name__ == "__main__":
    mnt, real, claimed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    FUSE(Card(real, claimed), mnt, foreground=True, raw_fi=True)
