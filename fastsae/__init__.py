"""fastsae: the command line that stands above the stages (harvest, store, train)."""
