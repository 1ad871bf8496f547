"""The command-line interface: parse, call the library, render.  Nothing else lives here.

Only this package imports typer and rich.  `app.py` builds the app, one module per command
(`push`, `pull`, `ls`, `alias`), `options.py` the shared options, `output.py` the one object that
decides what goes to stdout and stderr, `progress.py` the progress renderer, `completions.py` the
shell completion scripts, `complete.py` what they ask the lake at TAB time.
"""
