"""The one owner of how wmsub writes and reads its small files.

Writes are atomic: a temp file in the same folder, fsynced, renamed over the name, then
the folder fsynced, so a reader (status, another job, a crash-restart) sees the old file
or the new one, never half of either. Reads are tolerant: a missing or unreadable file is
`default`, because every reader here must survive a file another host is replacing.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename is still atomic
    finally:
        os.close(fd)


def _write_temp(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_name(path)
    with open(temp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return temp


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    temp = _write_temp(path, data)
    try:
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def json_bytes(data) -> bytes:
    # default=str: an engine fingerprint holding e.g. a torch dtype must not cost a video
    return json.dumps(data, indent=1, ensure_ascii=False, default=str).encode("utf-8")


def write_json_atomic(path: str | Path, data) -> Path:
    return write_bytes_atomic(path, json_bytes(data))


def copy_atomic(source: str | Path, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_name(path)
    try:
        shutil.copyfile(source, temp)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return path


def create_json_exclusive(path: str | Path, data) -> bool:
    """Create `path` holding `data` only if it does not exist; False if someone else did.

    The name appears with its whole content (a hard link of a complete temp file); on a
    filesystem without hard links, O_EXCL with a brief empty window.
    """
    path = Path(path)
    temp = _write_temp(path, json_bytes(data))
    try:
        os.link(temp, path)
        return True
    except FileExistsError:
        return False
    except OSError:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(temp.read_bytes())
            f.flush()
            os.fsync(f.fileno())
        return True
    finally:
        temp.unlink(missing_ok=True)


def read_json(path: str | Path, default=None):
    """The file's JSON value, or `default` when it is missing, unreadable or not JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def read_json_object(path: str | Path) -> dict | None:
    """The file's JSON object, or None (missing, unreadable, not JSON, or not an object)."""
    data = read_json(path)
    return data if isinstance(data, dict) else None
