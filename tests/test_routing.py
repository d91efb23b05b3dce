"""api/routing.py: a ScopedRouter refuses paths outside its scope at once, and crmgate's routers
only hold routes inside their scopes, so the shortcut never hides a route."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.routing import APIRoute

from conftest import RunningGateway
from crmgate.api.routes import entities
from crmgate.api.routing import ScopedRouter
from crmgate.contract.coverage import load_reference


def test_a_path_outside_the_scope_goes_on_to_the_next_routes() -> None:
    app = FastAPI()
    scoped = ScopedRouter(scope="/things/contact")

    @scoped.get("/things/contact/list")
    async def unified() -> str:
        return "unified"

    app.include_router(scoped)  # before the generic route: routes are tried in order

    @app.get("/things/{name}/list")
    async def generic(name: str) -> str:
        return f"generic {name}"

    other = ScopedRouter(scope="/things/other/")
    assert other.covers("/things/other") and other.covers("/things/other/list")
    assert not other.covers("/things/otherwise")
    with RunningGateway(app) as running, running.client() as client:
        assert client.get("/things/contact/list").json() == "unified"
        for name in ("Contact", "contactx", "contac"):
            assert client.get(f"/things/{name}/list").json() == f"generic {name}"
        # a partial match (the path, not the method) still counts
        assert client.post("/things/contact/list").status_code == 405


def test_every_scoped_router_of_crmgate_holds_only_paths_in_its_scope() -> None:
    document_paths = {f"/v1{path}" for path in load_reference()["paths"]}
    # (router, the prefix its routes get from the routers it is included in)
    routers: list[tuple[ScopedRouter, str]] = [(entities.router, "")]
    checked = 0
    while routers:
        router, above = routers.pop()
        assert isinstance(router, ScopedRouter)
        for route in router.routes:
            original = getattr(route, "original_router", None)
            if original is not None:
                routers.append((original, above + router.prefix))
                continue
            assert isinstance(route, APIRoute)
            # the access log writes a route's path as its template: it must be the whole one
            assert above == "" and route.path in document_paths, (above, route.path)
            assert router.covers(route.path), (router.scope, route.path)
            checked += 1
    assert checked > 300  # every entity route, the unified entities' in their own routers
