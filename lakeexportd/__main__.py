from __future__ import annotations

from lakeexportd.cli import main

raise SystemExit(main())
