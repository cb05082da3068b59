"""Small session-process classes to copy from (config/examples/session_process.yaml)."""
