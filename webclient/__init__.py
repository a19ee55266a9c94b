"""webclient: batch HTTP/1.x downloads and uploads with a persistent RFC 9111 cache."""

__version__ = "0.1.0"
