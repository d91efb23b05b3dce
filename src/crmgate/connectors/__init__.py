"""Connectors: one per CRM platform, registered here by the name their descriptors use."""

from __future__ import annotations

from crmgate.connectors.base import Connector
from crmgate.connectors.hubspot import HubSpotConnector
from crmgate.connectors.salesforce import SalesforceConnector

REGISTRY: dict[str, type[Connector]] = {
    connector.name: connector for connector in (SalesforceConnector, HubSpotConnector)
}
