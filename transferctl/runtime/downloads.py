"""Keras's own downloads (ImageNet weights, CIFAR), bounded in time and explained offline.

Keras fetches with `urlretrieve`, which has no timeout: on a network that silently drops packets
it hangs forever, and when DNS fails it raises a bare `Exception("URL fetch failure on URL ...")`.
`bounded_download` sets a socket timeout for the duration of the call and turns any failure to
fetch into a `UserError` naming the exact file Keras expects and the folder to put it in, so an
offline user can place the file by hand and run again with no network.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from transferctl.errors import UserError

DEFAULT_TIMEOUT_SECONDS = 8.0


def keras_cache_dir(subdir: str) -> Path:
    """The folder where Keras looks for cached downloads: $KERAS_HOME/<subdir> or ~/.keras/."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / subdir


def timeout_seconds() -> float:
    try:
        return float(os.environ.get("TRANSFERCTL_DOWNLOAD_TIMEOUT", DEFAULT_TIMEOUT_SECONDS))
    except ValueError:
        return DEFAULT_TIMEOUT_SECONDS


@contextlib.contextmanager
def bounded_download(where: str, subdir: str, expected_file: str | None = None) -> Iterator[None]:
    """Run a Keras call that may download; fail fast and clearly when it cannot.

    Args:
        where: the config field that asked for the download, e.g. `model.weights`.
        subdir: Keras's cache sub-folder, `models` or `datasets`.
        expected_file: the cache file name, when known in advance; otherwise it is taken from
            the URL in Keras's error.
    """
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_seconds())
    try:
        # Keras prints "Downloading data from ..." on stdout; stdout is for the run directory.
        with contextlib.redirect_stdout(sys.stderr):
            yield
    except Exception as error:  # Keras raises a bare Exception for fetch failures
        if isinstance(error, UserError) or not _is_fetch_failure(error):
            raise
        url = _url_in(str(error))
        file_name = expected_file or (Path(urlsplit(url).path).name if url else "the file")
        folder = keras_cache_dir(subdir)
        raise UserError(
            where,
            f"cannot download {file_name} ({_reason(error)})",
            f"with no network, put the file at {folder / file_name}"
            + (f" (from {url})" if url else "")
            + " and run again",
        ) from None
    finally:
        socket.setdefaulttimeout(previous)


def _is_fetch_failure(error: Exception) -> bool:
    text = str(error)
    return (
        "URL fetch failure" in text
        or isinstance(error, OSError | socket.timeout)
        or "timed out" in text
    )


def _url_in(text: str) -> str | None:
    match = re.search(r"(https?://\S+?)(?::\s|\s|$)", text)
    return match.group(1) if match else None


def _reason(error: Exception) -> str:
    text = str(error)
    if "--" in text:
        text = text.split("--", 1)[1]
    text = text.strip() or type(error).__name__
    return text if len(text) < 120 else text[:117] + "..."
