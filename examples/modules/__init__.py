"""The demo's gRPC example: ``oswee.module.v1.ModuleService`` with reflection."""
