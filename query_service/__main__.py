from query_service.cli import main

raise SystemExit(main())
