"""docs/platforms.md's tables come from the platform descriptors: the file must match them."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from crmgate.cli import app as cli
from crmgate.connectors import REGISTRY, support
from crmgate.connectors.catalogue import Catalogue
from crmgate.model.mapping import METHODS

DOC = Path(__file__).resolve().parents[1] / "docs" / "platforms.md"


def test_the_doc_holds_the_tables_the_descriptors_give() -> None:
    listed = Catalogue.load(REGISTRY).listed()
    document = DOC.read_text()
    assert support.replace_generated(document, support.markdown(listed)) == document, (
        "docs/platforms.md is out of date: run `make docs`"
    )


def test_a_cell_shows_the_methods_a_descriptor_declares() -> None:
    assert set(support.LETTERS) == set(METHODS)
    listed = Catalogue.load(REGISTRY).listed()
    hubspot = next(p for p in listed if p.type == "HubSpot")
    row = next(r for r in support.entity_table([hubspot]).splitlines() if r.startswith("| user |"))
    assert row == "| user | `LNGS` owners |"
    fewer = hubspot.model_copy(
        update={
            "entities": {
                **hubspot.entities,
                "user": hubspot.entities["user"].model_copy(update={"methods": ("get",)}),
            }
        }
    )
    row = next(r for r in support.entity_table([fewer]).splitlines() if r.startswith("| user |"))
    assert row == "| user | `G` owners |"
    assert "| HubSpot | `HubSpot` | `key` | `access_token` |" in support.authorization_table(
        [hubspot]
    )


def test_the_command_writes_and_prints_the_tables(tmp_path: Path) -> None:
    target = tmp_path / "platforms.md"
    target.write_text(f"# Title\n\n{support.BEGIN}\nstale\n{support.END}\n\nAfter.\n")
    result = CliRunner().invoke(cli, ["platforms", "--write", str(target)])
    assert result.exit_code == 0, result.output
    written = target.read_text()
    assert written.startswith("# Title") and written.endswith("After.\n")
    assert "stale" not in written and "| contact |" in written
    printed = CliRunner().invoke(cli, ["platforms", "--json"])
    assert "list" in json.loads(printed.output)["HubSpot"]["entities"]["contact"]
    missing = tmp_path / "no-markers.md"
    missing.write_text("nothing here")
    assert CliRunner().invoke(cli, ["platforms", "--write", str(missing)]).exit_code != 0
