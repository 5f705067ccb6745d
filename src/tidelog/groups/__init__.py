"""Consumer groups, above the engine: membership, assignment, committed offsets, lag.

The broker's side; the member's side is in the client (client/member.py), over gRPC
(tidelog.client.Consumer(group_id=...)) or in one process with the coordinator
(client/embedded_group.py).
"""
