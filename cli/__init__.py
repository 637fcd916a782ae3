"""The `agentq` command and its top-level entry points (bridge, db, check, demo, bench)."""
