"""Adapters: buddy inside agent frameworks (MCP, LangGraph, OpenAI Agents SDK); each needs its extra."""
