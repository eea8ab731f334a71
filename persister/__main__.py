from persister.cli import main

raise SystemExit(main())
