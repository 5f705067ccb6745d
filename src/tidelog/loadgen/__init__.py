"""`tidelog bench`: produce, consume and end-to-end latency scenarios against a server or embedded."""
