from unilip.cli import main

raise SystemExit(main())
