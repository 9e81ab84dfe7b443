"""`python -m obliviate ...`, which is what `accelerate launch -m obliviate ...` runs in every process."""

from obliviate.cli.main import main

raise SystemExit(main())
