"""Adapters: buddy inside agent frameworks, each in a module of its own behind an extra.

An adapter imports the decision core (:mod:`buddy.engine.core`) and its
framework, never the orchestration, the waves or the app. Import the module of
the framework you use, e.g. :mod:`buddy.engine.adapters.mcp` (``pip install
'buddy[mcp]'``); this package itself imports no framework.
"""
