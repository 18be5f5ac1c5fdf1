"""MkDocs hooks: the site is made of the repository's own Markdown, links kept true.

README.md, BASE_AGENT.md and proto/README.md live outside ``docs/`` (where
GitHub readers find them); they join the site here, README.md as its home
page. Links between the repository's files are rewritten to the pages they
became; a link to a repository file that is not a page (a source file, a test)
becomes its path in code, since the site cannot serve it; a link to nothing at
all is left alone, so ``mkdocs build --strict`` fails on it.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
DOCS = "docs"
# Repository path -> page in the site, for the files that live outside docs/.
OUTSIDE = {
    "README.md": "index.md",
    "BASE_AGENT.md": "BASE_AGENT.md",
    "proto/README.md": "proto/README.md",
}
# A link, or an image (``!`` first: README's screenshots live in docs/images/).
LINK = re.compile(r"(!?)\[([^\]\n]+)\]\(([^)\s]+)\)")


def on_files(files: Files, config: Any) -> Files:
    for repo_path, uri in OUTSIDE.items():
        files.append(File.generated(config, uri, abs_src_path=str(ROOT / repo_path)))
    return files


def _site_uri(repo_path: str) -> str | None:
    if repo_path in OUTSIDE:
        return OUTSIDE[repo_path]
    if repo_path.startswith(DOCS + "/") and (ROOT / repo_path).is_file():
        return repo_path[len(DOCS) + 1 :]
    return None


def _repo_path(uri: str) -> str:
    for repo_path, site_uri in OUTSIDE.items():
        if site_uri == uri:
            return repo_path
    return f"{DOCS}/{uri}"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    page_uri: str = page.file.src_uri
    page_repo_dir = posixpath.dirname(_repo_path(page_uri))

    def rewrite(match: re.Match[str]) -> str:
        bang, text, target = match.group(1), match.group(2), match.group(3)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith(("#", "/")):
            return match.group(0)  # a URL, an anchor on this page, or site-absolute
        path, _, anchor = target.partition("#")
        repo_path = posixpath.normpath(posixpath.join(page_repo_dir, path))
        uri = _site_uri(repo_path)
        if uri is not None:
            relative = posixpath.relpath(uri, posixpath.dirname(page_uri) or ".")
            return f"{bang}[{text}]({relative}{'#' + anchor if anchor else ''})"
        if (ROOT / repo_path).exists() and not bang:
            shown = f"`{repo_path}`"
            return shown if text.strip("`") == repo_path else f"{text} ({shown})"
        return match.group(0)  # nothing there: let the strict build report it

    # Leave fenced code alone: split on fences, rewrite the even (prose) parts only.
    parts = re.split(r"(^(?:```|~~~).*?^(?:```|~~~)[^\n]*$)", markdown, flags=re.M | re.S)
    return "".join(
        part if index % 2 else LINK.sub(rewrite, part) for index, part in enumerate(parts)
    )
