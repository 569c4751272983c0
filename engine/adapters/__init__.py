"""Adapters: buddy inside agent frameworks (MCP, LangGraph, OpenAI Agents SDK).

Each module needs its extra: ``pip install 'buddy[mcp]'``, ``buddy[langgraph]``,
``buddy[openai-agents]``. An adapter imports the decision core and its framework,
never the orchestration, the waves or the app; this package imports no framework.
"""
