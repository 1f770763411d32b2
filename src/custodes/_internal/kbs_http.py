"""Client-side rendering of the broker's ``ErrorInformation`` answers (guest and admin)."""

from __future__ import annotations

import httpx

from custodes.errors import CustodesError


class KbsRequestError(CustodesError):
    """The broker refused a request; carries its status and ``ErrorInformation``."""

    code = "kbs-request"

    def __init__(self, status: int, error_type: str, detail: str) -> None:
        self.status = status
        self.error_type = error_type
        self.detail = detail
        variant = error_type.rsplit("/", 1)[-1] or "error"
        super().__init__(f"broker answered {status} {variant}: {detail}")


class ResourceNotFound(KbsRequestError):
    code = "kbs-resource-not-found"


def raise_for_error(response: httpx.Response) -> None:
    """Raise :class:`KbsRequestError` for any answer but 200."""
    if response.status_code == 200:
        return
    error_type, detail = "", response.text[:500]
    try:
        body = response.json()
        if isinstance(body, dict):
            error_type = str(body.get("type", ""))
            detail = str(body.get("detail", detail))
    except ValueError:
        pass
    cls = ResourceNotFound if response.status_code == 404 else KbsRequestError
    raise cls(response.status_code, error_type, detail)
