"""Fuzz targets over the protocol package and the engines that drive them.

``python -m fuzz TARGET --seconds S`` runs one target under atheris (libFuzzer); without
atheris, the same target runs under hypothesis. :mod:`fuzz.targets` holds the targets:
plain functions of one ``bytes`` argument that raise only on a real finding.
"""

#: The targets, by the names ``python -m fuzz`` takes (``fuzz.targets.TARGETS`` has the functions).
TARGET_NAMES = ("frame_decoder", "codecs", "connection", "server_core")
