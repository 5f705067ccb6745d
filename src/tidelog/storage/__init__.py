"""Files on disk: segments, indexes, recovery and retention. Knows nothing of topics, groups or gRPC."""
