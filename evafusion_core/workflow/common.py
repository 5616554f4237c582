"""What the workflow modules share: the error they raise, progress reports, HTTP helpers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests


class WorkflowError(RuntimeError):
    """A workflow could not be loaded, converted, queued or executed.

    ``details`` carries the server's structured answer where there is one (``node_errors`` of a rejected
    prompt, the ``execution_error`` message of a failed one).
    """

    def __init__(self, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details: dict[str, Any] = dict(details or {})


@dataclass(frozen=True)
class Progress:
    """Progress of a running prompt, passed to ``on_progress`` callbacks.

    ``nodes_done`` of ``nodes_total`` nodes are finished (executed or served from cache); ``node`` is the
    node running now (None when unknown or finished); ``step``/``steps`` is that node's own progress bar
    (e.g. sampler or training steps) when it reports one.
    """

    nodes_done: int
    nodes_total: int
    node: str | None = None
    step: int | None = None
    steps: int | None = None


ProgressCallback = Callable[[Progress], None]


def _http(method: str, url: str, **kwargs: Any) -> requests.Response:
    try:
        return requests.request(method, url, timeout=kwargs.pop("timeout", 60), **kwargs)
    except requests.RequestException as exc:
        raise WorkflowError(f"ComfyUI server not reachable ({method} {url}): {exc}") from exc


def _json(resp: requests.Response, what: str) -> Any:
    try:
        return resp.json()
    except ValueError as exc:
        raise WorkflowError(f"{what}: the server answered HTTP {resp.status_code} with no JSON: "
                            f"{resp.text[:300]}") from exc


