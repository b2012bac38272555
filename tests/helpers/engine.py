"""Engine-side test helpers."""
from __future__ import annotations

import socket

from wmsub.benchmark.manifest import Instance


def make_instance(index: int, stem: str, prompt: str, image: str | None) -> Instance:
    """A benchmark instance as the manifest makes them; domain and size do not matter here."""
    return Instance(index, stem, prompt, image, "test", "test", None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
