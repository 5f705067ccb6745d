"""Record batch framing and compression: the one implementation shared by engine, server and client."""
