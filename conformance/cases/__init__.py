"""The conformance cases: pytest tests declared with :func:`conformance.registry.case`.

Each module groups the cases of one area; cases in a module share one server per settings
unless they ask for their own. Cases wait with ping/pong barriers, never with sleeps, and
assert only what the spec guarantees.
"""
