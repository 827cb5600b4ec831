"""The demo's NATS example: an inventory service written with ``wsgate.sdk.nats_service``."""
