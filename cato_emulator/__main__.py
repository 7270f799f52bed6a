"""``python -m cato_emulator``: serve one emulated replica (options: cato_emulator/server.py)."""

from cato_emulator.server import main

main()
