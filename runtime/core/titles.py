"""Process titles: `ps` shows `autan worker demo.echo@1a2b3c...`, not `python3.11 -m ...`."""

from __future__ import annotations

import setproctitle

__all__ = ["set_title"]


def set_title(title: str) -> None:
    """This process's title, as `ps` and `top` show it."""
    setproctitle.setproctitle(title)
