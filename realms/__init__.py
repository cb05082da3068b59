"""Policy: which realms exist and who may do what there. Never imports `router` (the mechanism)."""
