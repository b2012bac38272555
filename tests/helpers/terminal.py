"""A real terminal for tests: a detached tmux session runs a command; `screen()` is what a
person would see (`capture-pane`), `keys()` types (`send-keys`)."""
from __future__ import annotations

import shlex
import shutil
import subprocess
import time
import uuid

import pytest


class Terminal:
    def __init__(self, command: str, *, width: int = 120, height: int = 40, cwd=None):
        if shutil.which("tmux") is None:
            pytest.fail("tmux is not installed: `make test-tools` installs it", pytrace=False)
        self.name = f"wmsub-test-{uuid.uuid4().hex[:8]}"
        # the shell stays after the command so that its last screen can still be read
        # tmux may hand the pane a COLUMNS of its own default size (80), which rich and the
        # program would believe over the pane's real width
        script = f"unset COLUMNS LINES; {command}; echo \"[exit $?]\"; sleep 600"
        subprocess.run(["tmux", "new-session", "-d", "-s", self.name, "-x", str(width),
                        "-y", str(height), *(["-c", str(cwd)] if cwd else []),
                        "bash", "-c", script], check=True)

    def screen(self, *, escapes: bool = False, history: bool = False, joined: bool = False) -> str:
        """The pane's text; escapes: with colour codes; history: the scrollback too;
        joined: lines the terminal wrapped are joined back."""
        argv = ["tmux", "capture-pane", "-p", "-t", self.name]
        argv += ["-e"] if escapes else []
        argv += ["-J"] if joined else []
        argv += ["-S", "-"] if history else []
        return subprocess.run(argv, check=True, capture_output=True, text=True).stdout

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def wait_for(self, text: str, timeout_s: float = 60, **screen_args) -> str:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            shown = self.screen(**screen_args)
            if text in shown:
                return shown
            time.sleep(0.2)
        raise AssertionError(f"{text!r} did not appear within {timeout_s:.0f}s; screen:\n"
                             + self.screen(**screen_args))

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def shell_command(*argv) -> str:
    return shlex.join(str(a) for a in argv)
