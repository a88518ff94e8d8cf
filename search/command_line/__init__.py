"""The command line and its options: one declaration of every option, the parser and the TOML file made from it,
and the other commands (tasks, report, predict, export)."""
