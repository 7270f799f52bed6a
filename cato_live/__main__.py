from cato_live.cli import main

main()
