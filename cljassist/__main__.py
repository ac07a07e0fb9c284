from cljassist.cli import main

raise SystemExit(main())
