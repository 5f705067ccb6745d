"""What protects a broker: its TLS material, its users, and who is calling (README: Security)."""
