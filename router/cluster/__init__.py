"""Several nodes as one router, on Redis (issue 12). Imported only when the config has `cluster:`,
so a single node never loads a Redis client."""
