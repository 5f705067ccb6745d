"""Generated protobuf code for the wire API (proto/tidelog/v1/*.proto); regenerate with proto/generate.sh.

Imported only by tidelog.server and tidelog.client. Never edit the generated files by hand.
"""
