"""Running brokers as one cluster, coordinated by etcd (never a consensus of our own).

What is built so far: brokers register on an etcd lease (`membership.BrokerSession`), one of them is
elected controller through a lease, and every metadata write a controller makes is a transaction fenced
on its epoch. Placement, replication and failover of partitions build on this (see the README's
Cluster section for what a cluster does today).
"""
