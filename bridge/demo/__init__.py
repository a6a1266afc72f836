"""`skolebro demo`: a generated municipality, the loopback fakes, the real bridge and a
page to play parents and staff on (run.py wires it, page.py serves the page)."""
