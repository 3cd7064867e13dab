"""File and byte formats: trit packing, the packed artifact, checkpoint streaming, the
per-layer hardware image ($readmemh), and the TCP wire frames. Each module documents its
exact layout where it is defined (docs/SPEC.md collects them)."""
