from fastinterp.cli import main

raise SystemExit(main())
