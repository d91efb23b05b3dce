"""crmsim: faithful simulators of the CRM APIs crmgate talks to, for tests, benchmarks and demos.

Each module serves the subset of one CRM's public API that crmgate uses, as the CRM documents it,
over real HTTP(S) on loopback.
"""
