from __future__ import annotations

from lakeexportd.cli.commands import main

raise SystemExit(main())
