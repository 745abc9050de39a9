from evals.judges.plan import main

raise SystemExit(main())
