"""/health answers without a key, and says 503 when the database is gone."""

from __future__ import annotations

from pathlib import Path

from conftest import (
    RunningGateway,
    drop_postgres_database,
    make_settings,
    migrate_database,
    new_postgres_database,
)
from crmgate.api.app import create_app


def test_health_needs_no_key(sqlite_gateway: RunningGateway) -> None:
    with sqlite_gateway.client() as client:
        response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_health_is_503_when_the_database_is_unreachable(
    tmp_path: Path, postgres_available: None
) -> None:
    name, url = new_postgres_database()
    try:
        settings = make_settings(tmp_path / "data", url)
        migrate_database(settings)
        with RunningGateway(create_app(settings)) as gateway, gateway.client() as client:
            assert client.get("/health").status_code == 200
            drop_postgres_database(name)  # WITH (FORCE): the gateway's connections die too
            response = client.get("/health")
            assert response.status_code == 503
            assert response.json()["detail"]["code"] == "SERVICE_UNAVAILABLE"
            assert "crmgate_test" not in response.text  # no internals
    finally:
        drop_postgres_database(name)
