# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Kafka's murmur2 key hash, so a key lands on the partition a Kafka producer would pick."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from libc.stdint cimport int32_t, uint32_t

import numpy as np


cdef uint32_t _murmur2(const unsigned char* data, Py_ssize_t length) noexcept nogil:
    cdef uint32_t m = 0x5bd1e995U
    cdef uint32_t h = 0x9747b28cU ^ <uint32_t>length
    cdef uint32_t k
    cdef Py_ssize_t i, n4 = length // 4, tail = length & ~3
    for i in range(n4):
        k = (data[4 * i] | (<uint32_t>data[4 * i + 1] << 8) | (<uint32_t>data[4 * i + 2] << 16)
             | (<uint32_t>data[4 * i + 3] << 24))
        k *= m
        k ^= k >> 24
        k *= m
        h *= m
        h ^= k
    cdef Py_ssize_t rem = length % 4
    if rem == 3:
        h ^= <uint32_t>data[tail + 2] << 16
    if rem >= 2:
        h ^= <uint32_t>data[tail + 1] << 8
    if rem >= 1:
        h ^= data[tail]
        h *= m
    h ^= h >> 13
    h *= m
    h ^= h >> 15
    return h


def murmur2(const unsigned char[::1] key):
    """Kafka's murmur2 of key as a signed 32-bit int (what Utils.murmur2 returns)."""
    cdef Py_ssize_t n = key.shape[0]
    return <int32_t>_murmur2(&key[0] if n else NULL, n)


def partitions_for_keys(keys, int partitions):
    """Partition of every key: (murmur2(key) & 0x7fffffffU) % partitions, as Kafka's default partitioner.

    A None key gets -1: keyless records are placed by the caller.
    """
    if partitions <= 0:
        raise ValueError("partitions must be positive")
    cdef Py_ssize_t n = len(keys), i
    out = np.empty(n, dtype=np.int32)
    cdef int32_t[::1] o = out
    cdef object k
    for i in range(n):
        k = keys[i]
        if not PyBytes_CheckExact(k):
            if k is None:
                o[i] = -1
                continue
            if isinstance(k, str):
                raise TypeError("record keys must be bytes-like or None, not str (encode it first)")
            k = bytes(memoryview(k))
        o[i] = <int32_t>((_murmur2(<const unsigned char*>PyBytes_AS_STRING(k), PyBytes_GET_SIZE(k))
                          & 0x7fffffffU) % <uint32_t>partitions)
    return out
