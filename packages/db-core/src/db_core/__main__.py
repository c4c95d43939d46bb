from db_core.cli import main

raise SystemExit(main())
