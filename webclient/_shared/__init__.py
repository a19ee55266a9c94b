"""The private toolkit both packages use, so that each rule of HTTP or of the file system that
the server and the client share is written once.

It lives under :mod:`webclient` because that package's ``__init__`` imports nothing until a name
is used: the server importing ``webclient._shared`` loads these few modules and nothing of the
client, whereas the client importing from :mod:`webserver` would load the whole server (and h11).
Nothing here is public API; nothing here imports from either package.

- :mod:`.sizes`: ``512``, ``64K``, ``10MiB`` read as byte counts, and counts written for people.
- :mod:`.httpdate`: HTTP-dates per RFC 9110 §5.6.7, parsed exactly (the three forms only) and
  written as IMF-fixdate.
- :mod:`.grammar`: the plain subset of the field grammar the fast paths accept, the end of a
  head, the statuses without a body.
- :mod:`.tempfiles`: a new private file under a name no one else holds (the ``O_EXCL`` loop).
- :mod:`.clickusage`: click's usage errors as one line with status 2, in both command lines.
"""

#: The version of both packages (and of the distribution: ``pyproject.toml`` reads it here).
VERSION = "0.1.0"
