from ingest_service.cli import main

raise SystemExit(main())
