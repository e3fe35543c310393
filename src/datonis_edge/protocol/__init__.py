"""Vocabulary shared by both ends of a wire (the uplinks, the http_listener and the platform
simulator): written once, importing nothing of the package."""
