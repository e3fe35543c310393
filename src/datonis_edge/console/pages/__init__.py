"""The console's pages (server-rendered, htmx for the live parts): Overview, Services, Things,
Declined, Configuration, Alerts, Logs, Users & tokens. Each module gives its routes; `page_routes`
mounts them all. They read the status snapshot and call the service interface the supervisor
implements (app.ConsoleService); they never reach into adapters or uplinks. On a standby every
page names the master and offers no edit form; a change posted there anyway is refused (409)."""

from __future__ import annotations

from starlette.routing import BaseRoute

from .common import Audit, Service
from .configpage import config_routes
from .data import data_routes
from .logs import logs_routes
from .overview import overview_routes
from .users import user_routes


def page_routes(service: Service, store: object, audit: Audit) -> list[BaseRoute]:
    return [
        *overview_routes(service),
        *data_routes(service, audit),
        *config_routes(service, audit),
        *logs_routes(service),
        *user_routes(service, store, audit),
    ]
