"""crmgate: a self-hosted unified CRM API gateway speaking the Data2CRM.API v1 contract."""

__version__ = "0.1.0"
