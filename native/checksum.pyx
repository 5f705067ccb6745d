# cython: language_level=3, boundscheck=False, wraparound=False
"""CRC-32C over any buffer, with the GIL released for large inputs."""

from wire cimport tl_crc32c, tl_crc32c_setup, tl_crc32c_sw_only, tl_crc32c_hardware

tl_crc32c_setup()

HARDWARE = bool(tl_crc32c_hardware())


def crc32c(const unsigned char[::1] data, unsigned int crc=0):
    """CRC-32C of data, continuing from crc (0 to start)."""
    cdef size_t n = data.shape[0]
    cdef const unsigned char* p = &data[0] if n else NULL
    cdef unsigned int out
    if n >= 65536:
        with nogil:
            out = tl_crc32c(crc, p, n)
    else:
        out = tl_crc32c(crc, p, n)
    return out


def crc32c_software(const unsigned char[::1] data, unsigned int crc=0):
    """The table implementation, whatever the CPU offers; tests compare it with the hardware path."""
    cdef size_t n = data.shape[0]
    return tl_crc32c_sw_only(crc, &data[0] if n else NULL, n)
