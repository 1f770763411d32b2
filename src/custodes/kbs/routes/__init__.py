"""Every route of the broker's API, declared once: the dispatcher (``kbs/app.py``) serves
exactly these and the OpenAPI document (``kbs/openapi.py``) is generated from them."""

from __future__ import annotations

from typing import Final

from custodes.kbs.http import ApiRoute
from custodes.kbs.routes import admin, audit, operator, rcar, system

ROUTES: Final[tuple[ApiRoute, ...]] = (
    *rcar.ROUTES,
    *admin.ROUTES,
    *audit.ROUTES,
    *operator.ROUTES,
    *system.ROUTES,
)
