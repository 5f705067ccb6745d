"""The wire contract between the client and the server, in one place.

- `framing`: the hot-path messages (Produce, Subscribe, Fetch) framed and parsed by hand, zero-copy.
- `methods`: method paths and message types, derived from the service descriptors of the .proto.
- `statuses`: tidelog errors ↔ gRPC statuses and in-stream Error messages, both directions.
- `messages`: decoding a request so that malformed bytes become a precise error.

Imports only the generated code (`tidelog.v1`), the error tree and grpc/protobuf: both sides depend on
it, it depends on neither.
"""
