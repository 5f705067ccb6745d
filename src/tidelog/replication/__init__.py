"""Replicated partitions (Kafka's ISR protocol): the leader's bookkeeping of its followers and high
watermark, the follower's copy loop, and the manager that gives each hosted partition its role."""
