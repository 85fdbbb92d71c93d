from minilm.cli import main

raise SystemExit(main())
