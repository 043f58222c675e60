"""The only asyncio in the package: framing, the wire codecs, the servers, the driver."""
