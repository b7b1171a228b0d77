"""Services: daemon wiring, gRPC, CLI, metrics: thin translations over the core's data."""
