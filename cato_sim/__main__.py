from cato_sim.cli import main

main()
