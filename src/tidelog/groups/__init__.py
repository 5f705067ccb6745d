"""Consumer groups, above the engine: membership, assignment, committed offsets, lag.

Works the same embedded (GroupCoordinator + EmbeddedGroupConsumer in one process) and over gRPC
(the server exposes the coordinator; tidelog.client.Consumer(group_id=...) talks to it).
"""
