from fastsae.cli import main

main()
