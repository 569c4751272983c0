"""Adapters: buddy inside agent frameworks (MCP, LangGraph, OpenAI Agents SDK).

Each module needs its extra: ``pip install 'buddy[mcp]'``, ``buddy[langgraph]``,
``buddy[openai-agents]``.
"""
