"""The cluster bus's sizes, in one place: the bus and its outbox enforce them, and the config check
refuses a clustered listener whose `max_message_size` is past what the bus carries (so what a node
accepts from a client can cross to the others). No imports: config.py reads it without Twisted."""

MAX_MESSAGE = 8 * 1024 * 1024  # bytes of one bus message (one Redis PUBLISH); a larger one is refused
MAX_ITEM_BYTES = 7 * 1024 * 1024  # one call, answer or event in a batch: under MAX_MESSAGE with room for the rest
