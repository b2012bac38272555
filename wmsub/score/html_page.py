"""Self-contained HTML pages (the explorer, the compare page): inline CSS and JS, no
network, and every text taken from the benchmark or the judge escaped.

`esc` is the one way text enters a page; `href` the one way a file path does. The
inline script is pinned by a Content-Security-Policy hash, so even a text that escaped
escaping could not run a script of its own.
"""
from __future__ import annotations

import base64
import hashlib
import html
import os
from pathlib import Path
from urllib.parse import quote

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1400px;
padding:0 16px 40px;color:#222;background:#fafafa}
h1{font-size:1.5em;margin:18px 0 6px}h2{font-size:1.2em;margin:26px 0 8px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.86em;background:#fff}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right}th{background:#f0f0f0}
td:first-child,th:first-child,td.l,th.l{text-align:left}
tr.mine td{font-weight:bold;background:#fde8e8}
.warn{background:#fff4ce;border:1px solid #e0c060;padding:8px 12px;border-radius:4px}
.ok{background:#e6f4ea;border:1px solid #8bc39a;padding:8px 12px;border-radius:4px}
.muted{color:#777}.pass{color:#1a7f37}.fail{color:#c62828}
pre{white-space:pre-wrap;word-break:break-word;font-size:.82em;background:#f6f6f6;padding:6px;margin:4px 0;
max-height:14em;overflow:auto}
"""


def esc(value) -> str:
    """Text (or an attribute value) from outside: shown as text, never markup."""
    return html.escape("" if value is None else str(value), quote=True)


def href(target: Path, page_dir: Path) -> str:
    """A relative, percent-encoded link from page_dir to target (opens from any mount)."""
    rel = os.path.relpath(Path(target).resolve(), Path(page_dir).resolve())
    return esc(quote(rel.replace(os.sep, "/")))


def fmt(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def fmt_ci(ci) -> str:
    return "–" if not ci or ci[0] is None else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def page(title: str, body: str, script: str = "", extra_css: str = "") -> str:
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    csp = f"script-src 'sha256-{digest}'; object-src 'none'; base-uri 'none'"
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{csp}\">\n"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{esc(title)}</title>\n<style>{CSS}{extra_css}</style></head>\n<body>\n{body}\n"
            f"<script>{script}</script>\n</body></html>\n")
