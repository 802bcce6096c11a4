"""``python -m conformance``: see :mod:`conformance.runner`."""

from .runner import main

raise SystemExit(main())
