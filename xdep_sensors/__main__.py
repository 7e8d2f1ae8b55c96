"""``python -m xdep_sensors doctor ...``."""

from __future__ import annotations

import sys

from xdep_sensors.cli.main import main

sys.exit(main())
