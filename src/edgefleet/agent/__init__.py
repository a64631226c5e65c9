"""The device agent: enrolls, follows the hub, verifies releases and runs them as transactions.

An idle agent's memory is mostly the libraries it imports, so what only an update needs
(python-tuf, the verification) loads when a target first changes (`agent.runner`,
`agent.client`, `agent.truststore`), and the engine is reached with the same httpx as the
hub (`agent.engine.api`).
"""
