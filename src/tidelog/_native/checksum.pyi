"""CRC-32C (Castagnoli), with SSE4.2 when the CPU has it (native/checksum.pyx)."""

from typing_extensions import Buffer

HARDWARE: bool

def crc32c(data: Buffer, crc: int = 0) -> int: ...
def crc32c_software(data: Buffer, crc: int = 0) -> int: ...
