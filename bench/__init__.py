"""Courtyard benchmark harness (issue 3): router CPU per message against the bare WebSocket ceiling."""
