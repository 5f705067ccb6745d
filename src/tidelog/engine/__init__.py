"""The engine: topics of partitioned logs, used in-process or behind the server."""
