"""The web page: plain HTML, CSS and ES modules served by the ingress at ``/`` (no build step)."""

from pathlib import Path

WEB_DIR = Path(__file__).resolve().parent
INDEX_HTML = WEB_DIR / "index.html"
STATIC_DIR = WEB_DIR / "static"

# The page's own Content-Security-Policy: scripts, styles and fonts only from the service itself
# (no inline code, no CDN); images also from data: (live previews) and blob: (results fetched
# with the session cookie); requests only back to the service.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
