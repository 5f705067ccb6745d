"""The benchmarks' one harness: servers started on loopback ports they bind and stopped by PID
(processes, servers), rounds with rotation and warm-up, medians and same-run ratios (rounds), tables
(tables), the machine and its CPU load (machine), payloads and the command line (payloads, cli).

A scenario module says what it measures (a timed loop per system returning a Sample) and which ratios
and targets it reports; everything else is here.
"""
