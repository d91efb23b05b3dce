"""Connectors: one per CRM platform, registered here by the name their descriptors use."""

from __future__ import annotations

from crmgate.connectors.amocrm import AmoConnector
from crmgate.connectors.base import Connector
from crmgate.connectors.bitrix24 import Bitrix24Connector
from crmgate.connectors.close import CloseConnector
from crmgate.connectors.dynamics import DynamicsConnector
from crmgate.connectors.google import GoogleConnector
from crmgate.connectors.hubspot import HubSpotConnector
from crmgate.connectors.keap import KeapConnector
from crmgate.connectors.pipedrive import PipedriveConnector
from crmgate.connectors.salesforce import SalesforceConnector
from crmgate.connectors.zoho import ZohoConnector

REGISTRY: dict[str, type[Connector]] = {
    connector.name: connector
    for connector in (
        SalesforceConnector,
        HubSpotConnector,
        PipedriveConnector,
        ZohoConnector,
        DynamicsConnector,
        CloseConnector,
        GoogleConnector,
        AmoConnector,
        KeapConnector,
        Bitrix24Connector,
    )
}
