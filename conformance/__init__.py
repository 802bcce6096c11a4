"""A conformance suite that judges any chat server against spec/PROTOCOL.md.

``python -m conformance`` runs it (see :mod:`conformance.runner`). The pieces:

- :mod:`conformance.cases`: the cases, pytest tests declared with :func:`conformance.registry.case`
  under stable ids, each citing the spec section and requirement level it checks;
- :mod:`conformance.wire`: :class:`~conformance.wire.WirePeer`, a recording test client;
- :mod:`conformance.serverproc`: :class:`~conformance.serverproc.ServerProcess`, a server under test;
- :mod:`conformance.plugin` and :mod:`conformance.runner`: running the cases and reporting;
- :mod:`conformance.mutants`: broken servers the suite must catch;
- :mod:`conformance.differential`: one scripted session compared across servers.
"""
