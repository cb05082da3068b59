"""Transports: carry whole WAMP messages between a socket and a `router.protocol.WampProtocol`."""
