"""The gRPC server: thin servicers over the Engine (decode → call → encode) and its lifecycle."""
